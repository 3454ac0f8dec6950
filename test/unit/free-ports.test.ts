/**
 * The test support's port picker: ports picked one after another in one process are all
 * different, even though the kernel may hand the same ephemeral port out again once it is closed
 * (a Consul agent given the same port for serf and RPC refuses to start).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { freePort, freeUdpAndTcpPort } from '../support/net.js';

describe('freePort and freeUdpAndTcpPort', () => {
  test('never hand out the same port twice in one process', async () => {
    const ports: number[] = [];
    for (let i = 0; i < 300; i++) ports.push(await freePort());
    for (let i = 0; i < 20; i++) ports.push(await freeUdpAndTcpPort());
    assert.equal(new Set(ports).size, ports.length);
  });
});
