// Shared by web3js.mjs and kit.mjs: one JSON line per step on stdout, the
// JSON-RPC exchanges behind a failure, and the command line.
//
// A step prints {"step": name, "ok": true, "ms": ..., ...its figures}; a failed
// one prints {"step": name, "ok": false, "error": ..., "rpc": [the last
// exchanges]} and the script exits 1 (--keep-going: it goes on, and exits 1 at
// the end). MERCATO_CLIENT_TRACE=1 also writes every exchange to stderr.

import { createInterface } from 'node:readline';

const TRACE = process.env.MERCATO_CLIENT_TRACE === '1';
const KEPT = 8; // exchanges shown with a failure
const SHOWN = 1500; // characters of a request or a response shown

export const exchanges = [];
export const failed = [];
let keepGoing = false;
let stepTimeoutMs = 60_000;

export function parseArgs(usage) {
    const positional = [];
    const flags = new Set();
    for (const arg of process.argv.slice(2)) {
        if (arg.startsWith('--step-timeout=')) stepTimeoutMs = Number(arg.split('=')[1]) * 1000;
        else if (arg.startsWith('--')) flags.add(arg);
        else positional.push(arg);
    }
    if (positional.length < 1 || flags.has('--help')) {
        process.stderr.write(usage + '\n');
        process.exit(2);
    }
    keepGoing = flags.has('--keep-going');
    return { positional, flags };
}

function clip(text) {
    return text.length > SHOWN ? text.slice(0, SHOWN) + `... (${text.length} chars)` : text;
}

export function record(kind, request, response) {
    const entry = { kind, request: clip(request), response: clip(response) };
    exchanges.push(entry);
    if (exchanges.length > KEPT) exchanges.shift();
    if (TRACE) process.stderr.write(JSON.stringify(entry) + '\n');
}

/** A fetch that keeps every JSON-RPC request and response (for a failure's report). */
export async function recordingFetch(input, init) {
    const body = typeof init?.body === 'string' ? init.body : String(init?.body ?? '');
    let response;
    try {
        response = await fetch(input, { ...init, agent: undefined });
    } catch (error) {
        record('http', body, `fetch failed: ${error?.cause?.message ?? error.message}`);
        throw error;
    }
    const text = await response.clone().text();
    record('http', body, response.status === 200 ? text : `HTTP ${response.status}: ${text}`);
    return response;
}

export function emit(line) {
    process.stdout.write(JSON.stringify(line, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
}

function describe(error) {
    if (error === undefined || error === null) return String(error);
    if (typeof error !== 'object') return String(error);
    const parts = [error.name && error.name !== 'Error' ? `${error.name}: ` : '', error.message ?? ''];
    if (error.context !== undefined) parts.push(` context=${safeJson(error.context)}`);
    if (error.cause) parts.push(` cause=${describe(error.cause)}`);
    if (!error.message) parts.push(safeJson(error));
    return parts.join('');
}

function safeJson(value) {
    try {
        return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
    } catch {
        return String(value);
    }
}

function timeout(ms, name) {
    let timer;
    const promise = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name}: no answer in ${ms / 1000} s`)), ms);
    });
    return { promise, cancel: () => clearTimeout(timer) };
}

/** Runs one step: its figures on success; on failure, the report, then exit 1
 * (or, with --keep-going, undefined). */
export async function step(name, fn) {
    const started = performance.now();
    exchanges.length = 0;
    const limit = timeout(stepTimeoutMs, name);
    try {
        const figures = (await Promise.race([fn(), limit.promise])) ?? {};
        emit({ step: name, ok: true, ms: Math.round(performance.now() - started), ...figures });
        return figures;
    } catch (error) {
        const line = {
            step: name,
            ok: false,
            ms: Math.round(performance.now() - started),
            error: describe(error),
        };
        if (Array.isArray(error?.logs)) line.logs = error.logs;
        else if (Array.isArray(error?.transactionLogs)) line.logs = error.transactionLogs;
        line.rpc = [...exchanges];
        emit(line);
        failed.push(name);
        if (!keepGoing) finish();
        return undefined;
    } finally {
        limit.cancel();
    }
}

export function check(condition, message) {
    if (!condition) throw new Error(`check failed: ${message}`);
}

export function equal(actual, expected, what) {
    const shown = (v) => (typeof v === 'bigint' ? `${v}n` : safeJson(v));
    if (actual !== expected) {
        throw new Error(`check failed: ${what} is ${shown(actual)}, expected ${shown(expected)}`);
    }
}

export async function waitFor(what, condition, timeoutMs = 20_000, intervalMs = 200) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
        const value = await condition();
        if (value) return value;
        if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
}

let stdinLines;

/** Prints {"step": "pause", ...} and waits for one line on stdin (the test
 * restarts the localnet meanwhile). */
export async function pause(figures) {
    emit({ step: 'pause', ...figures });
    stdinLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
    const { done } = await stdinLines.next();
    if (done) throw new Error('stdin closed while paused');
}

export function finish() {
    if (failed.length) {
        process.stderr.write(`failed: ${failed.join(', ')}\n`);
        process.exit(1);
    }
    emit({ step: 'done', ok: true });
    process.exit(0); // the clients' websockets would keep the process alive
}

process.on('unhandledRejection', (error) => {
    // A client's background promise (e.g. a websocket reconnect) failing outside any step.
    process.stderr.write(`unhandled rejection: ${describe(error)}\n`);
});
