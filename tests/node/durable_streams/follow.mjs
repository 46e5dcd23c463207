// Follows one stream with the official Durable Streams client (@durable-streams/client, which
// the conformance suite brings) until it is closed: `node follow.mjs <live> <config JSON>`
// with config {url, offset}; prints `RESULT {"items": [...], "closed": bool, "offset": ...}`
// (the RESULT/ERROR line protocol of tests/support/node.py).
import { stream } from "@durable-streams/client";

const [live, raw] = process.argv.slice(2);
const config = JSON.parse(raw);
try {
  const res = await stream({
    url: config.url,
    offset: config.offset ?? "-1",
    live: live === "false" ? false : live,
  });
  const items = [];
  for await (const item of res.jsonStream()) items.push(item);
  console.log(
    "RESULT " + JSON.stringify({ items, closed: res.streamClosed, offset: res.offset }),
  );
} catch (error) {
  console.log("ERROR " + JSON.stringify({ message: String(error?.stack ?? error) }));
}
