import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

/**
 * Ports this process has handed out already. The kernel may give the same ephemeral port to two
 * picks in a row once the first is closed, and a caller that picks several ports for one server
 * (Consul's HTTP, serf and server ports) must get different ones.
 */
const handedOut = new Set<number>();

/** `pick` again until it gives a port this process has not handed out, and records it. */
async function unseen(pick: () => Promise<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await pick();
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error('the kernel kept giving ports this process had handed out already');
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it), never one handed out before. */
export async function freePort(): Promise<number> {
  return unseen(kernelPort);
}

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('no port'));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

async function isTcpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A port free for both UDP and TCP on 127.0.0.1 (a DNS server listens on both). */
export async function freeUdpAndTcpPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await unseen(
      () =>
        new Promise<number>((resolve, reject) => {
          const socket = createSocket('udp4');
          socket.on('error', reject);
          socket.bind(0, '127.0.0.1', () => {
            const { port: p } = socket.address();
            socket.close(() => resolve(p));
          });
        }),
    );
    if (await isTcpPortFree(port)) return port;
  }
  throw new Error('no port free for both UDP and TCP on 127.0.0.1');
}
