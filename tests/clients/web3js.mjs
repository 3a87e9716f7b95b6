// @solana/web3.js 1.x and @solana/spl-token against a local validator, used the
// stock way (no option a cluster would not need).
//
//   node web3js.mjs RPC_URL [WS_URL] [--pause] [--keep-going] [--step-timeout=S]
//
// WS_URL defaults to web3.js's own choice (the RPC port + 1). One JSON line per
// step on stdout (see _steps.mjs); exits 1 on the first failure. The steps: an
// airdrop confirmed with the blockhash strategy; two sendAndConfirmTransaction
// transfers on one Connection (the second on its cached blockhash); a
// simulation as wallets make it; SPL Token and Token-2022 (createMint,
// getOrCreateAssociatedTokenAccount, mintTo, transferChecked); version-0
// transactions, one through an address lookup table; getTransaction (and a
// batch of them), getBlock, cluster reads, signatures and token accounts by
// owner. With --pause it then prints {"step": "pause"} and waits for a line on
// stdin (the localnet is restarted meanwhile), checks that every balance and
// token amount survived and makes one more transfer on the same Connection.

import {
    AddressLookupTableProgram,
    Connection,
    Keypair,
    LAMPORTS_PER_SOL,
    SystemProgram,
    Transaction,
    TransactionMessage,
    VersionedTransaction,
    sendAndConfirmTransaction,
} from '@solana/web3.js';
import {
    AccountLayout,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    createMint,
    getAccount,
    getMint,
    getOrCreateAssociatedTokenAccount,
    mintTo,
    transferChecked,
} from '@solana/spl-token';

import { check, equal, finish, parseArgs, pause, recordingFetch, step, waitFor } from './_steps.mjs';

const { positional, flags } = parseArgs(
    'usage: node web3js.mjs RPC_URL [WS_URL] [--pause] [--keep-going] [--step-timeout=S]',
);
const [rpcUrl, wsUrl] = positional;
const COMMITMENT = 'confirmed';
const OPTIONS = { commitment: COMMITMENT };
const DECIMALS = 6;
const MINTED = 1_000_000_000n;
const SENT = 250_000_000n;
// mercato.settlement.TEST_MINT: the localnet's faucet grants its tokens with every airdrop.
const TEST_MINT = '38YXWWB1KC9G1eT8CGVmd4UG6eZYad9nsDBTuCeKYFxS';

const connection = new Connection(rpcUrl, {
    commitment: COMMITMENT,
    wsEndpoint: wsUrl,
    fetch: recordingFetch,
    disableRetryOnRateLimit: true,
});
const payer = Keypair.generate();
const recipient = Keypair.generate();
const sigs = {};
const tokens = {};

await step('connect', async () => {
    const version = await connection.getVersion();
    const { blockhash, lastValidBlockHeight } = await connection.getLatestBlockhash();
    const height = await connection.getBlockHeight();
    check(lastValidBlockHeight > height, `lastValidBlockHeight ${lastValidBlockHeight} > height ${height}`);
    return { version: version['solana-core'], blockhash, lastValidBlockHeight, height };
});

await step('airdrop', async () => {
    const signature = await connection.requestAirdrop(payer.publicKey, 100 * LAMPORTS_PER_SOL);
    const latest = await connection.getLatestBlockhash();
    const { value } = await connection.confirmTransaction({ signature, ...latest }, COMMITMENT);
    check(value.err === null, `airdrop error ${JSON.stringify(value.err)}`);
    equal(await connection.getBalance(payer.publicKey), 100 * LAMPORTS_PER_SOL, 'the balance');
    sigs.airdrop = signature;
    return { signature };
});

async function transfer(name, lamports) {
    const tx = new Transaction().add(
        SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: recipient.publicKey, lamports }),
    );
    const signature = await sendAndConfirmTransaction(connection, tx, [payer], OPTIONS);
    sigs[name] = signature;
    return { signature, blockhash: tx.recentBlockhash };
}

let first;
await step('transfer_1', async () => {
    first = await transfer('transfer_1', LAMPORTS_PER_SOL / 2);
    equal(await connection.getBalance(recipient.publicKey), LAMPORTS_PER_SOL / 2, "the recipient's balance");
    return first;
});

await step('transfer_2', async () => {
    const second = await transfer('transfer_2', LAMPORTS_PER_SOL / 4);
    const balance = await connection.getBalance(recipient.publicKey);
    equal(balance, (3 * LAMPORTS_PER_SOL) / 4, "the recipient's balance");
    // web3.js caches a blockhash for 30 s: the second transaction reuses the first's.
    return { ...second, reused_blockhash: second.blockhash === first?.blockhash };
});

await step('simulate', async () => {
    // As wallets do before asking to sign: no signature, the blockhash replaced.
    const message = new TransactionMessage({
        payerKey: payer.publicKey,
        recentBlockhash: Keypair.generate().publicKey.toBase58(), // not a real blockhash
        instructions: [
            SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: recipient.publicKey, lamports: 1000 }),
        ],
    }).compileToV0Message();
    const { value } = await connection.simulateTransaction(new VersionedTransaction(message), {
        sigVerify: false,
        replaceRecentBlockhash: true,
        accounts: { encoding: 'base64', addresses: [recipient.publicKey.toBase58()] },
    });
    check(value.err === null, `simulation error ${JSON.stringify(value.err)}`);
    check(value.unitsConsumed > 0, `unitsConsumed ${value.unitsConsumed}`);
    check(value.logs?.some((line) => line.includes('11111111111111111111111111111111')), 'the logs name the system program');
    equal(value.accounts?.[0]?.lamports, (3 * LAMPORTS_PER_SOL) / 4 + 1000, "the recipient's simulated lamports");
    equal(await connection.getBalance(recipient.publicKey), (3 * LAMPORTS_PER_SOL) / 4, 'the balance (unchanged)');
    check(value.replacementBlockhash?.blockhash, 'a replacement blockhash');
    return { unitsConsumed: value.unitsConsumed };
});

async function tokenSteps(label, programId) {
    const t = { programId };
    tokens[label] = t;
    await step(`${label}.create_mint`, async () => {
        t.mint = await createMint(connection, payer, payer.publicKey, null, DECIMALS, undefined, OPTIONS, programId);
        const mint = await getMint(connection, t.mint, COMMITMENT, programId);
        equal(mint.decimals, DECIMALS, 'decimals');
        return { mint: t.mint.toBase58() };
    });
    await step(`${label}.create_ata`, async () => {
        const ata = await getOrCreateAssociatedTokenAccount(
            connection, payer, t.mint, payer.publicKey, false, COMMITMENT, OPTIONS, programId,
        );
        t.source = ata.address;
        equal(ata.amount, 0n, 'the new account amount');
        return { account: ata.address.toBase58() };
    });
    await step(`${label}.mint_to`, async () => {
        const signature = await mintTo(connection, payer, t.mint, t.source, payer, MINTED, [], OPTIONS, programId);
        equal((await getAccount(connection, t.source, COMMITMENT, programId)).amount, MINTED, 'amount minted');
        return { signature };
    });
    await step(`${label}.transfer_checked`, async () => {
        const destination = await getOrCreateAssociatedTokenAccount(
            connection, payer, t.mint, recipient.publicKey, false, COMMITMENT, OPTIONS, programId,
        );
        t.destination = destination.address;
        const signature = await transferChecked(
            connection, payer, t.source, t.mint, t.destination, payer, SENT, DECIMALS, [], OPTIONS, programId,
        );
        equal((await getAccount(connection, t.destination, COMMITMENT, programId)).amount, SENT, 'amount received');
        equal((await getAccount(connection, t.source, COMMITMENT, programId)).amount, MINTED - SENT, 'amount left');
        equal((await getMint(connection, t.mint, COMMITMENT, programId)).supply, MINTED, 'supply');
        return { signature };
    });
}

await tokenSteps('token', TOKEN_PROGRAM_ID);
await tokenSteps('token2022', TOKEN_2022_PROGRAM_ID);

await step('v0_transfer', async () => {
    const latest = await connection.getLatestBlockhash();
    const message = new TransactionMessage({
        payerKey: payer.publicKey,
        recentBlockhash: latest.blockhash,
        instructions: [
            SystemProgram.transfer({
                fromPubkey: payer.publicKey,
                toPubkey: recipient.publicKey,
                lamports: LAMPORTS_PER_SOL / 10,
            }),
        ],
    }).compileToV0Message();
    const tx = new VersionedTransaction(message);
    tx.sign([payer]);
    const signature = await connection.sendTransaction(tx);
    const { value } = await connection.confirmTransaction({ signature, ...latest }, COMMITMENT);
    check(value.err === null, `error ${JSON.stringify(value.err)}`);
    sigs.v0 = signature;
    return { signature };
});

const table = { addresses: [Keypair.generate(), Keypair.generate(), Keypair.generate()].map((k) => k.publicKey) };
await step('lookup_table.create', async () => {
    const recentSlot = await connection.getSlot('finalized');
    const [create, address] = AddressLookupTableProgram.createLookupTable({
        authority: payer.publicKey,
        payer: payer.publicKey,
        recentSlot,
    });
    const extend = AddressLookupTableProgram.extendLookupTable({
        payer: payer.publicKey,
        authority: payer.publicKey,
        lookupTable: address,
        addresses: table.addresses,
    });
    const signature = await sendAndConfirmTransaction(connection, new Transaction().add(create, extend), [payer], OPTIONS);
    table.address = address;
    table.createdIn = (await connection.getSignatureStatus(signature)).value?.slot;
    return { signature, address: address.toBase58(), recentSlot };
});

await step('lookup_table.v0_transfer', async () => {
    // A table extended in slot S is usable from slot S + 1.
    await waitFor('the next slot', async () => (await connection.getSlot()) > (table.createdIn ?? 0), 10_000);
    const { value: account } = await connection.getAddressLookupTable(table.address);
    check(account !== null, 'getAddressLookupTable found the table');
    equal(account.state.addresses.length, table.addresses.length, 'addresses in the table');
    const lamports = LAMPORTS_PER_SOL / 100;
    const latest = await connection.getLatestBlockhash();
    const message = new TransactionMessage({
        payerKey: payer.publicKey,
        recentBlockhash: latest.blockhash,
        instructions: table.addresses.map((toPubkey) =>
            SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey, lamports }),
        ),
    }).compileToV0Message([account]);
    equal(message.addressTableLookups.length, 1, 'lookups in the message');
    const tx = new VersionedTransaction(message);
    tx.sign([payer]);
    const signature = await connection.sendTransaction(tx);
    const { value } = await connection.confirmTransaction({ signature, ...latest }, COMMITMENT);
    check(value.err === null, `error ${JSON.stringify(value.err)}`);
    for (const address of table.addresses) {
        equal(await connection.getBalance(address), lamports, `the balance of ${address.toBase58()}`);
    }
    sigs.v0Lookup = signature;
    return { signature };
});

await step('get_transaction', async () => {
    const found = await connection.getTransaction(sigs.transfer_1, {
        commitment: COMMITMENT,
        maxSupportedTransactionVersion: 0,
    });
    check(found !== null, `getTransaction(${sigs.transfer_1}) found it`);
    check(found.meta !== null && found.meta.err === null, `meta without error: ${JSON.stringify(found.meta)}`);
    equal(found.version, 'legacy', 'version');
    equal(found.transaction.signatures[0], sigs.transfer_1, 'the signature');
    const keys = found.transaction.message.staticAccountKeys.map((k) => k.toBase58());
    check(keys.includes(recipient.publicKey.toBase58()), 'the recipient among the account keys');
    const index = keys.indexOf(recipient.publicKey.toBase58());
    equal(found.meta.postBalances[index] - found.meta.preBalances[index], LAMPORTS_PER_SOL / 2, 'balance change');
    check(found.slot > 0, `slot ${found.slot}`);
    const figures = { slot: found.slot, fee: found.meta.fee, blockTime: found.blockTime };
    if (sigs.v0Lookup) {
        const v0 = await connection.getTransaction(sigs.v0Lookup, {
            commitment: COMMITMENT,
            maxSupportedTransactionVersion: 0,
        });
        check(v0 !== null, `getTransaction(${sigs.v0Lookup}) found the v0 transaction`);
        equal(v0.version, 0, 'version');
        equal(v0.meta.loadedAddresses?.writable?.length, table.addresses.length, 'loaded writable addresses');
    } else if (sigs.v0) {
        const v0 = await connection.getTransaction(sigs.v0, {
            commitment: COMMITMENT,
            maxSupportedTransactionVersion: 0,
        });
        check(v0 !== null, `getTransaction(${sigs.v0}) found the v0 transaction`);
        equal(v0.version, 0, 'version');
    }
    return figures;
});

await step('get_transactions_batch', async () => {
    // web3.js sends these as one JSON-RPC batch request.
    const found = await connection.getTransactions([sigs.transfer_1, sigs.transfer_2, sigs.v0], {
        commitment: COMMITMENT,
        maxSupportedTransactionVersion: 0,
    });
    equal(found.length, 3, 'answers');
    check(found.every((tx) => tx !== null && tx.meta.err === null), 'every transaction found, without error');
    return {};
});

await step('block', async () => {
    const { slot } = await connection.getTransaction(sigs.transfer_1, {
        commitment: COMMITMENT,
        maxSupportedTransactionVersion: 0,
    });
    const block = await connection.getBlock(slot, { commitment: COMMITMENT, maxSupportedTransactionVersion: 0 });
    check(block !== null, `getBlock(${slot})`);
    const signatures = block.transactions.map((tx) => tx.transaction.signatures[0]);
    check(signatures.includes(sigs.transfer_1), `transfer_1 in block ${slot}: ${signatures}`);
    check(block.blockhash && block.previousBlockhash && block.blockhash !== block.previousBlockhash, 'block hashes');
    const time = await connection.getBlockTime(slot);
    check(typeof time === 'number' && Math.abs(time - Date.now() / 1000) < 600, `getBlockTime ${time}`);
    return { slot, transactions: block.transactions.length, blockTime: time };
});

await step('cluster_reads', async () => {
    const epoch = await connection.getEpochInfo();
    check(epoch.absoluteSlot > 0 && epoch.slotsInEpoch > 0, `getEpochInfo ${JSON.stringify(epoch)}`);
    const genesis = await connection.getGenesisHash();
    check(typeof genesis === 'string' && genesis.length >= 32, `getGenesisHash ${genesis}`);
    const accounts = await connection.getMultipleAccountsInfo([payer.publicKey, recipient.publicKey, Keypair.generate().publicKey]);
    equal(accounts.length, 3, 'getMultipleAccountsInfo answers');
    check(accounts[0] !== null && accounts[1] !== null && accounts[2] === null, 'two accounts and a missing one');
    const latest = await connection.getLatestBlockhash();
    const message = new TransactionMessage({
        payerKey: payer.publicKey,
        recentBlockhash: latest.blockhash,
        instructions: [SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: recipient.publicKey, lamports: 1 })],
    }).compileToV0Message();
    const { value: fee } = await connection.getFeeForMessage(message);
    equal(fee, 5000, 'getFeeForMessage');
    const count = await connection.getTransactionCount();
    check(count >= 10, `getTransactionCount ${count}`);
    return { epoch: epoch.epoch, genesis, fee, transactionCount: count };
});

await step('get_signatures_for_address', async () => {
    const found = await connection.getSignaturesForAddress(recipient.publicKey);
    const seen = found.map((s) => s.signature);
    for (const name of ['transfer_1', 'transfer_2']) {
        check(seen.includes(sigs[name]), `${name} among the recipient's ${seen.length} signatures`);
    }
    return { count: found.length };
});

await step('token_accounts_by_owner', async () => {
    const t = tokens.token;
    const { value: every } = await connection.getTokenAccountsByOwner(payer.publicKey, { programId: TOKEN_PROGRAM_ID });
    const granted = every.filter((a) => AccountLayout.decode(a.account.data).mint.toBase58() === TEST_MINT);
    equal(granted.length, 1, "the payer's test tokens from the faucet");
    const raw = every.filter((a) => !granted.includes(a));
    equal(raw.length, 1, "the payer's token accounts");
    equal(raw[0].pubkey.toBase58(), t.source.toBase58(), 'the account');
    equal(AccountLayout.decode(raw[0].account.data).amount, MINTED - SENT, 'amount');
    const { value: byMint } = await connection.getTokenAccountsByOwner(recipient.publicKey, { mint: t.mint });
    equal(byMint.length, 1, "the recipient's accounts of the mint");
    const { value: parsed } = await connection.getParsedTokenAccountsByOwner(recipient.publicKey, {
        programId: TOKEN_PROGRAM_ID,
    });
    equal(parsed.length, 1, "the recipient's parsed token accounts");
    const info = parsed[0].account.data.parsed.info;
    equal(info.tokenAmount.amount, String(SENT), 'parsed amount');
    equal(info.tokenAmount.decimals, DECIMALS, 'parsed decimals');
    equal(info.mint, t.mint.toBase58(), 'parsed mint');
    const { value: parsed2022 } = await connection.getParsedTokenAccountsByOwner(recipient.publicKey, {
        programId: TOKEN_2022_PROGRAM_ID,
    });
    equal(parsed2022.length, 1, "the recipient's Token-2022 accounts");
    equal(parsed2022[0].account.data.parsed.info.tokenAmount.amount, String(SENT), 'Token-2022 parsed amount');
    return {};
});

async function snapshot() {
    const state = {
        payer: await connection.getBalance(payer.publicKey),
        recipient: await connection.getBalance(recipient.publicKey),
    };
    for (const [label, t] of Object.entries(tokens)) {
        for (const side of ['source', 'destination']) {
            if (t[side]) state[`${label}.${side}`] = (await getAccount(connection, t[side], COMMITMENT, t.programId)).amount;
        }
    }
    return state;
}

if (flags.has('--pause')) {
    let before;
    await step('before_restart', async () => {
        before = await snapshot();
        return before;
    });
    await pause({});
    await step('after_restart', async () => {
        const after = await waitFor('the localnet back', async () => {
            try {
                return await snapshot();
            } catch (error) {
                if (String(error).includes('fetch failed')) return undefined;
                throw error;
            }
        });
        for (const [key, value] of Object.entries(before ?? {})) {
            equal(after[key], value, `${key} after the restart`);
        }
        return after;
    });
    await step('transfer_after_restart', async () => {
        const before = await connection.getBalance(recipient.publicKey);
        const figures = await transfer('transfer_after_restart', LAMPORTS_PER_SOL / 100);
        equal(await connection.getBalance(recipient.publicKey), before + LAMPORTS_PER_SOL / 100, "the recipient's balance");
        return { ...figures, reused_blockhash: figures.blockhash === first?.blockhash };
    });
}

finish();
