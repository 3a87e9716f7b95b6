// @solana/kit (with @solana-program/system) against a local validator: its
// airdrop and send-and-confirm factories, and its subscriptions.
//
//   node kit.mjs RPC_URL [WS_URL] [--keep-going] [--step-timeout=S]
//
// WS_URL defaults to the RPC URL with ws:// and the port + 1. One JSON line per
// step on stdout (see _steps.mjs); exits 1 on the first failure.

import {
    airdropFactory,
    appendTransactionMessageInstruction,
    createDefaultRpcTransport,
    createSolanaRpcFromTransport,
    createSolanaRpcSubscriptions,
    createTransactionMessage,
    generateKeyPairSigner,
    getBase64EncodedWireTransaction,
    getSignatureFromTransaction,
    lamports,
    pipe,
    sendAndConfirmTransactionFactory,
    setTransactionMessageFeePayerSigner,
    setTransactionMessageLifetimeUsingBlockhash,
    signTransactionMessageWithSigners,
} from '@solana/kit';
import { getTransferSolInstruction } from '@solana-program/system';

import { check, equal, finish, parseArgs, record, step } from './_steps.mjs';

const { positional } = parseArgs('usage: node kit.mjs RPC_URL [WS_URL] [--keep-going] [--step-timeout=S]');
const rpcUrl = positional[0];
const wsUrl = positional[1] ?? defaultWsUrl(rpcUrl);
const COMMITMENT = 'confirmed';
const SOL = 1_000_000_000n;

function defaultWsUrl(url) {
    const parsed = new URL(url);
    parsed.protocol = parsed.protocol === 'https:' ? 'wss:' : 'ws:';
    parsed.port = String(Number(parsed.port || (parsed.protocol === 'wss:' ? 443 : 80)) + 1);
    return parsed.toString();
}

// The default transport, each exchange kept for a failure's report.
const http = createDefaultRpcTransport({ url: rpcUrl });
const transport = async (config) => {
    const request = JSON.stringify(config.payload);
    try {
        const response = await http(config);
        record('http', request, JSON.stringify(response, (_, v) => (typeof v === 'bigint' ? v.toString() : v)));
        return response;
    } catch (error) {
        record('http', request, `failed: ${error.message}${error.cause ? ` (${error.cause.message})` : ''}`);
        throw error;
    }
};
const rpc = createSolanaRpcFromTransport(transport);
const rpcSubscriptions = createSolanaRpcSubscriptions(wsUrl);
const payer = await generateKeyPairSigner();
const recipient = await generateKeyPairSigner();

/** The first notification of ``subscription`` that ``accept`` takes, or an error after ``ms``. */
async function firstNotification(notifications, accept, abort, ms, what) {
    const timer = setTimeout(() => abort.abort(new Error(`no ${what} in ${ms / 1000} s`)), ms);
    try {
        for await (const notification of notifications) {
            if (accept(notification)) return notification;
        }
        throw new Error(`the ${what} subscription ended`);
    } finally {
        clearTimeout(timer);
        abort.abort();
    }
}

async function transferTransaction(amount) {
    const { value: latest } = await rpc.getLatestBlockhash({ commitment: COMMITMENT }).send();
    const message = pipe(
        createTransactionMessage({ version: 0 }),
        (m) => setTransactionMessageFeePayerSigner(payer, m),
        (m) => setTransactionMessageLifetimeUsingBlockhash(latest, m),
        (m) =>
            appendTransactionMessageInstruction(
                getTransferSolInstruction({ source: payer, destination: recipient.address, amount }),
                m,
            ),
    );
    return signTransactionMessageWithSigners(message);
}

await step('kit.connect', async () => {
    const version = await rpc.getVersion().send();
    const slot = await rpc.getSlot({ commitment: COMMITMENT }).send();
    return { version: version['solana-core'], slot };
});

await step('kit.slot_subscription', async () => {
    const abort = new AbortController();
    const notifications = await rpcSubscriptions.slotNotifications().subscribe({ abortSignal: abort.signal });
    const slots = [];
    await firstNotification(notifications, (n) => slots.push(n.slot) >= 3, abort, 10_000, 'slot notifications');
    check(slots[2] > slots[0], `slots advance: ${slots.join(', ')}`);
    return { slots: slots.map(Number) };
});

let airdropSignature;
await step('kit.airdrop', async () => {
    const airdrop = airdropFactory({ rpc, rpcSubscriptions });
    airdropSignature = await airdrop({
        recipientAddress: payer.address,
        lamports: lamports(5n * SOL),
        commitment: COMMITMENT,
    });
    const { value } = await rpc.getBalance(payer.address, { commitment: COMMITMENT }).send();
    equal(value, 5n * SOL, 'the balance');
    return { signature: airdropSignature };
});

let transferSignature;
await step('kit.transfer_with_account_subscription', async () => {
    const abort = new AbortController();
    const notifications = await rpcSubscriptions
        .accountNotifications(recipient.address, { commitment: COMMITMENT, encoding: 'base64' })
        .subscribe({ abortSignal: abort.signal });
    const seen = firstNotification(notifications, (n) => n.value.lamports === SOL, abort, 15_000, 'account notification');
    const transaction = await transferTransaction(lamports(SOL));
    transferSignature = getSignatureFromTransaction(transaction);
    const started = performance.now();
    await sendAndConfirmTransactionFactory({ rpc, rpcSubscriptions })(transaction, { commitment: COMMITMENT });
    const confirmedMs = Math.round(performance.now() - started);
    const notification = await seen;
    equal(notification.value.owner, '11111111111111111111111111111111', 'the owner notified');
    return { signature: transferSignature, confirm_ms: confirmedMs, notified_slot: notification.context.slot };
});

await step('kit.signature_subscription', async () => {
    const transaction = await transferTransaction(lamports(SOL / 2n));
    const signature = getSignatureFromTransaction(transaction);
    const abort = new AbortController();
    const notifications = await rpcSubscriptions
        .signatureNotifications(signature, { commitment: COMMITMENT })
        .subscribe({ abortSignal: abort.signal });
    const notified = firstNotification(notifications, () => true, abort, 15_000, 'signature notification');
    const started = performance.now();
    const sent = await rpc
        .sendTransaction(getBase64EncodedWireTransaction(transaction), { encoding: 'base64', preflightCommitment: COMMITMENT })
        .send();
    equal(sent, signature, 'the signature sendTransaction answered');
    const notification = await notified;
    const confirmMs = Math.round(performance.now() - started);
    equal(notification.value.err, null, 'the notified error');
    const { value } = await rpc.getBalance(recipient.address, { commitment: COMMITMENT }).send();
    equal(value, (3n * SOL) / 2n, "the recipient's balance");
    return { signature, confirm_ms: confirmMs, slot: notification.context.slot };
});

await step('kit.get_transaction', async () => {
    const found = await rpc
        .getTransaction(transferSignature, { commitment: COMMITMENT, maxSupportedTransactionVersion: 0, encoding: 'json' })
        .send();
    check(found !== null, `getTransaction(${transferSignature}) found it`);
    equal(Number(found.version), 0, 'version');
    equal(found.meta?.err, null, 'the error');
    equal(found.transaction.signatures[0], transferSignature, 'the signature');
    const statuses = await rpc.getSignatureStatuses([airdropSignature, transferSignature]).send();
    check(statuses.value.every((s) => s !== null && s.err === null), `statuses ${JSON.stringify(statuses.value, (_, v) => (typeof v === 'bigint' ? v.toString() : v))}`);
    return { slot: found.slot };
});

finish();
