/**
 * Builds an earlier release of consul-acme from this repository's history, for upgrade tests that
 * run it beside the current build. `git archive <commit>` exports the commit's `src`,
 * `package.json` and `tsconfig.json` into a folder under the system's temporary directory (no git
 * worktree is registered, nothing in the repository changes); its `node_modules` is a link to this
 * checkout's, which is only allowed when every dependency the old package.json pins is installed
 * at exactly that version (checked first: a mismatch throws, naming the package); then TypeScript
 * (this checkout's) compiles only `src`. The build is kept and reused by later runs for the same
 * commit (a `.built` marker says it finished).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PreviousRelease {
  commit: string;
  /** The folder the release was exported to and built in. */
  dir: string;
  /** Its compiled entry point, for spawnInstance's `mainJs`. */
  mainJs: string;
}

const BUILD_TIMEOUT_MS = 300_000;

/** The repository root (the folder with package.json and .git), from this file in dist/test/support. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, '.git'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the repository root (package.json beside .git) above test/support');
}

/** The dependencies `packageJson` pins that this checkout's node_modules does not hold at that version. */
export function incompatibleDependencies(packageJson: string, nodeModules: string): string[] {
  const pkg = JSON.parse(packageJson) as {
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
  const wanted = { ...pkg.dependencies, ...pkg.devDependencies };
  const problems: string[] = [];
  for (const [name, version] of Object.entries(wanted)) {
    const installed = join(nodeModules, name, 'package.json');
    if (!existsSync(installed)) {
      problems.push(`${name} ${version} is not installed`);
      continue;
    }
    const have = (JSON.parse(readFileSync(installed, 'utf8')) as { version: string }).version;
    if (have !== version.replace(/^[=v]/, ''))
      problems.push(`${name}: the release pins ${version}, ${have} is installed`);
  }
  return problems;
}

/** Exports and builds `commit` (a full or abbreviated hash), or reuses an earlier build of it. */
export function buildPreviousRelease(commit: string): PreviousRelease {
  const root = repoRoot();
  const full = execFileSync('git', ['-C', root, 'rev-parse', '--verify', `${commit}^{commit}`], {
    encoding: 'utf8',
  }).trim();
  const dir = join(tmpdir(), `consul-acme-release-${full.slice(0, 12)}`);
  const mainJs = join(dir, 'dist', 'src', 'main.js');
  if (existsSync(join(dir, '.built')) && existsSync(mainJs)) return { commit: full, dir, mainJs };

  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const archive = execFileSync(
    'git',
    ['-C', root, 'archive', '--format=tar', full, 'src', 'package.json', 'tsconfig.json'],
    {
      maxBuffer: 256 * 1024 * 1024,
    },
  );
  execFileSync('tar', ['-x', '-C', dir], { input: archive });

  const nodeModules = realpathSync(join(root, 'node_modules'));
  const problems = incompatibleDependencies(readFileSync(join(dir, 'package.json'), 'utf8'), nodeModules);
  if (problems.length > 0) {
    throw new Error(
      `release ${full.slice(0, 12)} cannot share this checkout's node_modules (npm ci is not allowed here): ${problems.join('; ')}`,
    );
  }
  symlinkSync(nodeModules, join(dir, 'node_modules'), 'dir');
  // Only the service: the release's tests are not needed to run it.
  writeFileSync(
    join(dir, 'tsconfig.release.json'),
    JSON.stringify({ extends: './tsconfig.json', include: ['src/**/*.ts'] }, null, 2),
  );
  execFileSync(process.execPath, [join(nodeModules, 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.release.json'], {
    cwd: dir,
    stdio: 'pipe',
    timeout: BUILD_TIMEOUT_MS,
  });
  if (!existsSync(mainJs)) throw new Error(`building release ${full.slice(0, 12)} produced no ${mainJs}`);
  writeFileSync(join(dir, '.built'), `${full}\n`);
  return { commit: full, dir, mainJs };
}
