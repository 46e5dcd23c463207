// The Durable Streams reference server (in memory) on 127.0.0.1:<port>, for
// benchmarks/durable_streams.py: `node serve.mjs <port> <long-poll ms>`; prints READY.
import { DurableStreamTestServer } from "@durable-streams/server";

const [port, longPoll] = process.argv.slice(2).map(Number);
const server = new DurableStreamTestServer({ port, host: "127.0.0.1", longPollTimeout: longPoll });
await server.start();
console.log("READY");
