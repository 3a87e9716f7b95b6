// The official x402 client, configured as its README shows, pays for one call
// (or a few) to a node's x402 gateway.
//
//   node pay.mjs CONFIG.json     (or the JSON on stdin: node pay.mjs -)
//
// CONFIG: {"gateway": "http://127.0.0.1:8402", "agent": "PUBLISHER/NAME",
//          "input": "text sent as the body", "secretKey": [64 bytes],
//          "rpcUrl": "http://127.0.0.1:8899", "calls": 1,
//          "allowAsset": {"network": "solana:...", "asset": "MINT", "maxAmountPerPayment": "N"}}
//
// allowAsset (optional): a token the client may pay in besides its default
// assets (USDC and the like, which it pays up to $1 a call), with a cap in base
// units: the client refuses any other, so a localnet's test mint must be named.
//
// One JSON line per call on stdout: {call, status, body, paymentResponse (the
// decoded PAYMENT-RESPONSE header, or null), paymentRequired (the decoded
// PAYMENT-REQUIRED header of the 402 the client answered), accepted (the
// requirements it chose and signed for), ms (the whole call: 402, payment,
// run, settlement)}; an exception ends the run with {call, error} and exit 1.

import { readFileSync } from 'node:fs';

import { createKeyPairSignerFromBytes } from '@solana/kit';
import { decodePaymentRequiredHeader, decodePaymentSignatureHeader } from '@x402/core/http';
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from '@x402/fetch';
import { ExactSvmScheme } from '@x402/svm/exact/client';

const source = process.argv[2] ?? '-';
const config = JSON.parse(readFileSync(source === '-' ? 0 : source, 'utf8'));
const url = `${config.gateway.replace(/\/$/, '')}/x402/v2/run/${config.agent}`;
const calls = config.calls ?? 1;

// The README's builder pattern: a kit signer from the secret key's bytes, the
// exact scheme for every Solana network, with the RPC it reads the mint and a
// blockhash from (a localnet here; the client's default is the public cluster).
const signer = await createKeyPairSignerFromBytes(Uint8Array.from(config.secretKey));
const client = new x402Client().register('solana:*', new ExactSvmScheme(signer, { rpcUrl: config.rpcUrl }));
if (config.allowAsset) client.setSpendControls({ allowedAssets: [config.allowAsset] });

// What passed over the wire, for the test: the 402's requirements and the payment.
let seen = {};
const recordingFetch = async (request, init) => {
    const sent = new Request(request, init);
    const signature = sent.headers.get('PAYMENT-SIGNATURE');
    if (signature) seen.accepted = decodePaymentSignatureHeader(signature).accepted;
    const response = await fetch(sent);
    const required = response.headers.get('PAYMENT-REQUIRED');
    if (response.status === 402 && required && !seen.paymentRequired) {
        seen.paymentRequired = decodePaymentRequiredHeader(required);
    }
    return response;
};
const fetchWithPayment = wrapFetchWithPayment(recordingFetch, client);

let failed = false;
for (let call = 1; call <= calls; call++) {
    seen = {};
    const started = performance.now();
    try {
        const response = await fetchWithPayment(url, { method: 'POST', body: config.input ?? '' });
        const text = await response.text();
        const ms = performance.now() - started;
        let body = text;
        try {
            body = JSON.parse(text);
        } catch {}
        const header = response.headers.get('PAYMENT-RESPONSE');
        const paymentResponse = header ? decodePaymentResponseHeader(header) : null;
        const line = { call, status: response.status, body, paymentResponse, ...seen, ms };
        console.log(JSON.stringify(line));
    } catch (error) {
        console.log(JSON.stringify({ call, error: `${error.message}${error.cause ? ` (${error.cause.message ?? error.cause})` : ''}`, ...seen }));
        failed = true;
        break;
    }
}
process.exit(failed ? 1 : 0);
