import { createLogger, type Logger } from '../../src/logging.js';

/** One parsed JSON log line. */
export interface LogLine {
  msg?: string;
  event?: string;
  reason?: string;
  hostname?: string;
  component?: string;
  err?: string;
  time?: string;
  [field: string]: unknown;
}

/** A logger whose JSON lines the test reads, parsed, in order. */
export function captureLogs(level: 'info' | 'debug' | 'warn' = 'info'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = createLogger(level, {
    write(chunk: string) {
      for (const line of chunk.split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as LogLine);
    },
  });
  return { logger, lines };
}
