// The Durable Streams server conformance suite against CONFORMANCE_TEST_URL (run by
// tests/test_durable_streams.py through vitest, with its JSON reporter).
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL,
  longPollTimeoutMs: Number(process.env.LONG_POLL_TIMEOUT_MS ?? "1000"),
});
