/**
 * Benchmark child: the fastest plain-HTTP upstream node:http makes, answering every request with
 * the same small JSON body (a fixed Content-Length, keep-alive). Request bodies are drained.
 */
import { createServer } from 'node:http';
import { failChild, serveHttpChild } from '../lib/children.ts';

const BODY = Buffer.from('{"ok":true,"service":"bench-upstream"}\n');

try {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const answer = () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
      res.end(BODY);
    };
    if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) answer();
    else {
      req.resume();
      req.once('end', answer);
    }
  });
  await serveHttpChild(server);
} catch (err) {
  failChild(err);
}
