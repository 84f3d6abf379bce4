"""Local paths and storage URIs (s3://, gs://, file://, ... through pyarrow): one place to read,
write and mirror files.

* `atomic_write` is the only way mtard replaces a file another process may read (a checkpoint,
  a review file, a teacher): the data goes to a temporary file next to the target, then
  `os.replace` swaps it in, so a reader or a crash never sees half a file.
* `json_safe` is the one JSON rule: NaN and ±inf become null (strict JSON has neither).
* A location is a local path or a URI; `join`, `exists`, `read_text` and `write_text` take both;
  `download`, `read_into`, `put_file`, `upload` and `put_atomic` move files between the two.
  Nothing else in mtard calls pyarrow or tests for "://" (`is_uri`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mtard.errors import MtardError


def is_uri(location: str) -> bool:
    return "://" in str(location)


def absolute(location: str | Path | None, default: str | Path) -> str:
    """Ray wants absolute local paths; URIs (s3://, gs://, ...) pass through."""
    value = str(location or default)
    return value if is_uri(value) else os.path.abspath(value)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def with_scheme(path: str, like: str) -> str:
    """Ray reports paths on a URI storage without the scheme (bucket/key): put `like`'s scheme back."""
    if not path or is_uri(path) or not is_uri(like):
        return path
    return f"{like.split('://', 1)[0]}://{path}"


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], Any], *, shared: bool = False) -> None:
    """Replace `path` atomically with `data` (text, bytes, or a function that writes a given path).

    The temporary file is removed if writing fails (e.g. the disk is full, or the function raises),
    and the previous content of `path`, if any, stays. `shared`: other processes may write the same
    file at the same time (a teacher cache), so the temporary name carries this process's id and two
    writers never write into one temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp" if shared else f"{path.name}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_line(path: Path, line: str) -> None:
    """Append one line to a log file (JSONL), flushed and fsync'ed; after a last line torn by a
    crash, on a fresh line, so the new line is never glued onto the half one."""
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + line + "\n")
        f.flush()
        os.fsync(f.fileno())


def parse_json_object(line: str) -> dict | None:
    """`line` parsed as a JSON object; None for anything else (torn, empty, a list)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of a JSONL log, in order; blank lines and lines torn by a crash are skipped."""
    if not path.is_file():
        return []
    return [obj for line in path.read_text().splitlines() if (obj := parse_json_object(line)) is not None]


def drop_torn_lines(path: Path) -> int:
    """Rewrite a JSONL log without its lines torn by a crash (not a JSON object); returns how many there were."""
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    good = [line for line in lines if parse_json_object(line) is not None]
    if len(good) < len(lines):
        atomic_write(path, "".join(line + "\n" for line in good))
    return len(lines) - len(good)


def json_safe(value: Any) -> Any:
    """Strict-JSON-safe copy: NaN/±inf -> None, recursively; keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _filesystem(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_text(location: str) -> str | None:
    """A small file from a local path or a URI; None if it does not exist."""
    if not is_uri(location):
        path = Path(location)
        return path.read_text() if path.is_file() else None
    try:
        fs, path = _filesystem(location)
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def write_text(location: str, text: str) -> None:
    """A small file at a local path (atomically) or a URI (one object: there whole or not at all)."""
    if not is_uri(location):
        atomic_write(location, text)
        return
    fs, path = _filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def exists(location: str) -> bool:
    """Whether a file is at a local path or a URI (OSError if the storage cannot be asked)."""
    if not is_uri(location):
        return Path(location).is_file()
    import pyarrow.fs

    fs, path = _filesystem(location)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def local_file(location: str, cache: Path) -> Path:
    """A local path for a file recorded as a local path or a URI: a file:// URI names a local path
    already; any other URI (s3://, gs://, ...) is downloaded into `cache`, under its own name."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    if not is_uri(location):
        return Path(location)
    return download(location, cache / Path(location).name)


def read_into(uri: str, path: Path) -> None:
    """Stream one file from a URI into the local `path` (written in place: give it a temporary
    file); OSError (or pyarrow's error) if it cannot be read."""
    fs, remote = _filesystem(uri)
    _stream_into(fs, remote, path)


def _stream_into(fs, remote: str, path: Path) -> None:
    with fs.open_input_stream(remote) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def put_file(local: Path, uri: str) -> None:
    """Stream one local file to a URI (an object store shows the object only once it is complete)."""
    fs, remote = _filesystem(uri)
    fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(remote) as out:
        while block := src.read(1 << 20):
            out.write(block)


def delete(location: str) -> None:
    """Remove a file at a local path or a URI; a missing one is fine."""
    if not is_uri(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = _filesystem(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def download(uri: str, target: Path) -> Path:
    """Copy one file from a URI to a local path (atomically); MtardError naming the URI if it fails."""
    try:
        atomic_write(target, lambda tmp: read_into(uri, tmp))
    except Exception as err:  # pyarrow raises OSError/ArrowInvalid/... for a bad URI or a missing object
        raise MtardError(f"cannot fetch {uri}: {err}") from err
    return target


def upload(local_root: Path, files: Iterable[Path], uri: str) -> None:
    """Copy `files` (under `local_root`) to the same relative paths under `uri`."""
    import pyarrow.fs

    fs, root = _filesystem(uri)
    fs.create_dir(root, recursive=True)  # a no-op on object stores; needed for file://
    local = pyarrow.fs.LocalFileSystem()
    for path in files:
        rel = path.relative_to(local_root).as_posix()
        if "/" in rel:
            fs.create_dir(f"{root}/{rel.rsplit('/', 1)[0]}", recursive=True)
        pyarrow.fs.copy_files(str(path), f"{root}/{rel}", source_filesystem=local, destination_filesystem=fs)


def put_atomic(local: Path, fs, folder: str, name: str) -> None:
    """Copy the local file into `folder/name` on a pyarrow filesystem (local, NFS or a cloud store):
    to a temporary name first, then moved over the previous file, so no reader sees half of it."""
    import pyarrow.fs

    fs.create_dir(folder, recursive=True)
    partial = f"{folder}/{name}.tmp"
    pyarrow.fs.copy_files(str(local), partial, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    fs.move(partial, f"{folder}/{name}")


def get_file(fs, folder: str, name: str, local: Path) -> bool:
    """Copy `folder/name` on a pyarrow filesystem into the local file `local` (the twin of `put_atomic`);
    False when it is not there."""
    try:
        _stream_into(fs, f"{folder}/{name}", local)
    except FileNotFoundError:
        return False
    return True


def download_missing(uri: str, local_root: Path, names: Iterable[str], dirs: Iterable[str] = ()) -> None:
    """Fetch the files `names` and everything under `dirs` from `uri` that are not under `local_root` yet."""
    import pyarrow.fs

    fs, root = _filesystem(uri)
    local_root.mkdir(parents=True, exist_ok=True)
    local = pyarrow.fs.LocalFileSystem()
    wanted = [f"{root}/{n}" for n in names]
    for d in dirs:
        try:
            wanted += [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/{d}", recursive=True)) if i.is_file]
        except (FileNotFoundError, OSError):
            pass
    for remote in wanted:
        target = local_root / remote[len(root) + 1 :]
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            pyarrow.fs.copy_files(remote, str(target), source_filesystem=fs, destination_filesystem=local)
        except (FileNotFoundError, OSError):
            pass


def first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating `path` would create), or None."""
    path = Path(path).absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def remove_empty_folders(root: Path) -> None:
    """Remove `root` and the folders under it that hold no file (what a failed start created); files stay."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [root]:
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty


def check_writable(folder: Path, what: str, fix: str) -> None:
    """Create `folder` (and its parents) and prove a file can be written there; else one clear line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".mtard-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise MtardError(f"{what} {folder} is not writable ({reason.lower()}): {fix}") from err


def check_folder_name(name: str, field_name: str, *, reserved: Iterable[str] = (), example: str = "digits_mtard") -> str:
    """The one rule for a name that becomes a folder (a run, an experiment): one plain path part.

    Not empty, not `.`/`..`, no `/` or `\\` (it would write outside its parent folder), no control
    characters (a newline breaks every log and listing), and none of `reserved` (folders the
    command itself uses in the same parent, e.g. `teachers` in a search storage).
    """
    text = str(name)
    plain = text not in ("", ".", "..") and not any(c in text for c in "/\\") and text.isprintable()
    if not plain:
        raise MtardError(
            f"{field_name}: {text!r} is not a folder name: use one plain name such as {example} "
            f"(no '/', '\\', '..', newlines or other control characters; not empty)"
        )
    if text in set(reserved):
        raise MtardError(f"{field_name}: {text!r} is reserved for mtard's own folder there: choose another name")
    return text


def check_inside(relative: str, field_name: str, parent: str) -> None:
    """A relative path from a file (a catalog's `checkpoint:`) must stay inside `parent`: no `..` part."""
    parts = Path(relative).parts
    if ".." in parts or not str(relative).isprintable():
        raise MtardError(f"{field_name}: {relative!r} leaves {parent}: write a path inside it (no '..'), or an absolute path")
