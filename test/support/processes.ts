/**
 * One exit hook for every server a test starts (Consul, Pebble, consul-acme instances): tracked
 * child processes are killed, and tracked temporary folders removed, when the test process ends,
 * also by SIGINT, SIGTERM or SIGHUP (a killed test run leaves nothing behind).
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

const children = new Set<ChildProcess>();
const folders = new Set<string>();
let hookInstalled = false;

function cleanUp(): void {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
}

function installHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on('exit', cleanUp);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      cleanUp();
      // Keep the default behaviour (exit) unless someone else handles the signal.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

/** Kills `child` when the test process ends, unless it has exited by then. */
export function killOnExit(child: ChildProcess): void {
  installHook();
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Removes `dir` when the test process ends. */
export function removeOnExit(dir: string): void {
  installHook();
  folders.add(dir);
}
