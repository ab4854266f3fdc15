/**
 * Writing a set of files all or nothing, for the commands that write several (`init`,
 * `dev-certs`): every target is checked first (no directory in a file's place, no file in a
 * directory's, a writable directory), each file is then written under a temporary name beside its
 * target, and only once all of them are written are they renamed into place. A problem is one
 * {@link FileWriteError} naming the path and the cause in plain words; the temporary files, and the
 * directories this call created, are removed. (Only a rename failing part-way, which the checks
 * make unlikely, could leave some files replaced and others not.)
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, chmod, lstat, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, basename, join, resolve } from 'node:path';

export interface FileToWrite {
  path: string;
  content: string;
  /** The mode a new file is created with (the umask applies) ... */
  mode: number;
  /** ... or exactly, whatever the umask (private keys). */
  exactMode?: boolean;
}

/** A file that could not be written: its path and the cause, in words. */
export class FileWriteError extends Error {
  readonly path: string;
  /** Why, in words: "it is a directory", "permission denied", … */
  readonly reason: string;
  constructor(path: string, reason: string, verb: 'write' | 'create' = 'write') {
    super(`cannot ${verb} ${path}: ${reason}`);
    this.name = 'FileWriteError';
    this.path = path;
    this.reason = reason;
  }
}

const CAUSES: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is used up',
  EISDIR: 'it is a directory',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many levels of symbolic links',
  EMFILE: 'too many open files',
};

function causeOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return (code !== undefined && CAUSES[code]) || (err as Error).message;
}

async function statOrUndefined(path: string, follow: boolean) {
  try {
    return follow ? await stat(path) : await lstat(path);
  } catch (err) {
    // ENOTDIR: a file where a folder of the path should be, which the caller looks for next.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/**
 * Why `path` cannot be written, or undefined when it looks writable: a directory in its place, a
 * file where a directory of its path should be, or a directory this user may not write in.
 */
async function targetProblem(path: string): Promise<FileWriteError | undefined> {
  try {
    if ((await statOrUndefined(path, false))?.isDirectory() === true) return new FileWriteError(path, 'it is a directory');
    // The nearest folder of the path that exists must be a folder this user may write in.
    let missing: string | undefined; // the folder under it that would be created first
    for (let dir = dirname(path); ; missing = dir, dir = dirname(dir)) {
      const found = await statOrUndefined(dir, true);
      if (found === undefined && dirname(dir) !== dir) continue;
      if (found !== undefined && !found.isDirectory()) return new FileWriteError(path, `${dir} is not a directory`);
      try {
        await access(dir, constants.W_OK | constants.X_OK);
      } catch (err) {
        return missing === undefined ? new FileWriteError(path, causeOf(err)) : new FileWriteError(missing, causeOf(err), 'create');
      }
      return undefined;
    }
  } catch (err) {
    return new FileWriteError(path, causeOf(err));
  }
}

/** The first problem any of `paths` has (see {@link writeFilesTogether}), or undefined. */
export async function checkWritable(paths: readonly string[]): Promise<FileWriteError | undefined> {
  for (const path of paths) {
    const problem = await targetProblem(resolve(path));
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * Writes every file or none (see the module comment). Directories are created as needed. Throws
 * {@link FileWriteError}.
 */
export async function writeFilesTogether(files: readonly FileToWrite[]): Promise<void> {
  const problem = await checkWritable(files.map((file) => file.path));
  if (problem !== undefined) throw problem;
  const created: string[] = [];
  const temporary: string[] = [];
  const suffix = randomBytes(6).toString('hex');
  try {
    for (const dir of new Set(files.map((file) => dirname(resolve(file.path))))) {
      try {
        const first = await mkdir(dir, { recursive: true });
        if (first !== undefined) created.push(first);
      } catch (err) {
        throw new FileWriteError(dir, causeOf(err), 'create');
      }
    }
    const placed: [string, string][] = [];
    for (const file of files) {
      const target = resolve(file.path);
      const temp = join(dirname(target), `.${basename(target)}.${suffix}.tmp`);
      try {
        await writeFile(temp, file.content, { mode: file.exactMode === true ? 0o600 : file.mode, flag: 'wx' });
        temporary.push(temp);
        if (file.exactMode === true) await chmod(temp, file.mode);
      } catch (err) {
        throw new FileWriteError(target, causeOf(err));
      }
      placed.push([temp, target]);
    }
    for (const [temp, target] of placed) {
      try {
        await rename(temp, target);
      } catch (err) {
        throw new FileWriteError(target, causeOf(err));
      }
    }
  } catch (err) {
    await Promise.all([...temporary, ...created].map((path) => rm(path, { force: true, recursive: true }).catch(() => undefined)));
    throw err;
  }
}
