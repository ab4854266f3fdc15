/**
 * Benchmark child: a grpc-js server on h2c (plaintext, as gRPC services behind a sidecar listen),
 * answering the benchmark's unary method with its request.
 */
import * as grpc from '@grpc/grpc-js';
import { failChild, serveChild } from '../lib/children.ts';
import { BENCH_METHOD } from '../lib/h2-load.ts';

try {
  const server = new grpc.Server();
  server.addService({ echo: BENCH_METHOD }, {
    echo: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(null, call.request),
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound))));
  serveChild({ url: `http://127.0.0.1:${port}`, address: `127.0.0.1:${port}` }, async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });
} catch (err) {
  failChild(err);
}
