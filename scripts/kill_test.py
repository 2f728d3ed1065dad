"""Crash safety: SIGKILL index runs at random and at aimed moments, rerun, and verify nothing was lost.

    python scripts/kill_test.py                      # 20 CLI kills + 6 server kills, real audio
    python scripts/kill_test.py --kills 5 --server-kills 2 --esc 60 --fsdd 20 --json out.json

The corpus is real audio from ``../shared/data`` (ESC-10 clips and spoken digits from FSDD, as
symlinks, so speech is transcribed and passages are written too). Each kill is one of:

- ``random``: a moment drawn uniformly from the first seconds of the run's write phase (mid-file:
  decoding, a model, or a write),
- ``commit``: stopped inside an item's transaction just before ``COMMIT``, then killed (mid-commit),
- ``commit+``: let go from there and killed 0-5 ms later (during ``COMMIT``, which is also where
  SQLite runs its automatic WAL checkpoints),
- ``vectors.save+``: killed 0-50 ms into writing a vector index (``faiss.write_index``),
- ``vectors.sidecar``: killed after the new index file replaced the old one, before its sidecar
  (count, watermarks) was written,
- ``checkpoint+``: killed 0-50 ms into closing the catalog, which checkpoints the WAL into the
  database file and deletes the WAL,

aimed with the named fault points of :mod:`soundscope.faults` (the process stops itself there with
SIGSTOP; its fault log says where it was when it died). Vector indexes are only written when more than
512 vectors are pending, so the save kills come after the corpus has been analysed once (each killed
save leaves the work pending, so the next run saves again). Between kills, a few files are removed
from the corpus and later put back, so deletions (tombstones) are killed too.

After every kill the library left behind is verified before the rerun: SQLite ``integrity_check``,
foreign keys, no orphan rows, both full-text tables, every vector index's keys against the catalog
(``soundscope check``'s own checks), no duplicate paths, every item whole (segments, its vectors, a
description vector), the query columns' ids equal to the catalog's, and nothing lost: every item seen
after an earlier kill is still there with the same id and hash unless its file was removed. After
the last kill a final run must finish, with every corpus file indexed exactly once and ``soundscope
check`` clean (files on disk included). The same is done for index jobs started over the HTTP API of
``soundscope serve``, with the server killed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SOUNDSCOPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
AIMED = ("commit", "commit+", "vectors.save+", "vectors.sidecar", "checkpoint+")


# -- the corpus ---------------------------------------------------------------------------------


def make_corpus(root: Path, *, esc: int, fsdd: int, seed: int = 0) -> list[Path]:
    """``esc`` ESC-10 clips and ``fsdd`` spoken digits (an even spread) as symlinks under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    clips = sorted((DATA / "esc10" / "audio").glob("*/*.ogg"))
    digits = sorted((DATA / "fsdd" / "recordings").glob("*.wav"))
    rng = random.Random(seed)
    chosen = [*rng.sample(clips, min(esc, len(clips))), *rng.sample(digits, min(fsdd, len(digits)))]
    out = []
    for src in chosen:
        link = root / f"{src.parent.name}-{src.name}"
        if not link.is_symlink():
            os.symlink(src, link)
        out.append(link)
    return sorted(out)


def index_cmd(corpus: Path, data: Path, *, asr: str = "tiny.en") -> list[str]:
    return [sys.executable, "-m", "soundscope.cli", "index", str(corpus), "--data-dir", str(data), "-q", "-j", "1",
            "--asr-model", asr, "--json"]  # fmt: skip


# -- a process to kill ----------------------------------------------------------------------------


def _env(log: Path, stop: str | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "SOUNDSCOPE_FAULT_LOG": str(log)}
    env.pop("SOUNDSCOPE_FAULT_STOP", None)
    if stop:
        env["SOUNDSCOPE_FAULT_STOP"] = stop
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


class Victim:
    """A subprocess with a fault log (and maybe a stop point)."""

    def __init__(self, cmd: list[str], log: Path, stop: str | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(cmd, env=_env(log, stop), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def points(self) -> list[tuple[float, str]]:
        """(monotonic time, name) of every fault point this process reached."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            t, pid, name = line.split(" ", 2)
            if int(pid) == self.proc.pid:
                out.append((float(t), name))
        return out

    def state(self) -> str:
        try:
            return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "X"

    def wait_for(self, cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            if self.proc.poll() is not None:
                return bool(cond())
            time.sleep(0.005)
        return False

    def stopped(self, timeout: float) -> bool:
        return self.wait_for(lambda: self.state() == "T", timeout)

    def kill(self) -> str:
        """SIGKILL it; returns what went wrong when it had already ended with an error instead."""
        ended = self.proc.poll()
        if ended is None:
            self.proc.send_signal(signal.SIGKILL)
        _, err = self.proc.communicate()
        if ended not in (None, 0):
            return f"exit {ended}: " + err.decode(errors="replace").strip()[-500:]
        return ""

    def last_point(self) -> str:
        pts = [name.rstrip("+") for _, name in self.points()]
        return pts[-1] if pts else "(none: starting up)"


# -- verification -------------------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    problems: list[str] = field(default_factory=list)
    items: int = 0
    snapshot: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (path, content hash)


def verify(data: Path, corpus: set[str], before: dict[int, tuple[str, str]], *, final: bool = False) -> Verdict:
    """Everything a crash must not break; ``final``: also every corpus file indexed, none missing on disk."""
    from soundscope.check import check
    from soundscope.store import Store

    problems: list[str] = []
    if not (data / "catalog.sqlite").exists():
        gone = bool(before) or final
        return Verdict(not gone, ["the catalog is gone" if before else "no catalog"] if gone else [])
    with Store(data, create=False) as store:
        report = check(store, repair=False)
        for c in report.checks:
            if not c.ok and (final or c.name != "files on disk"):  # a killed run may not have dropped them yet
                problems.append(f"check {c.name}: {c.detail}")
        conn = store.catalog.conn
        rows = conn.execute("SELECT id, path, content_hash FROM items").fetchall()
        snapshot = {int(r[0]): (r[1], r[2]) for r in rows}
        paths = [r[1] for r in rows]
        if len(paths) != len(set(paths)):
            problems.append(f"duplicate paths: {len(paths) - len(set(paths))}")
        if stray := set(paths) - corpus - {p for p, _ in before.values()}:
            problems.append(f"items for files never in the corpus: {sorted(stray)[:3]}")
        audio_spaces = [s for s in store.catalog.models() if store.source(s) == "segments"]
        no_seg = conn.execute("SELECT count(*) FROM items WHERE id NOT IN (SELECT item_id FROM segments)").fetchone()[0]
        if no_seg:
            problems.append(f"{no_seg} items without segments")
        no_desc = conn.execute(
            "SELECT count(*) FROM items WHERE id NOT IN (SELECT item_id FROM item_data WHERE space='description')"
        ).fetchone()[0]
        if no_desc:
            problems.append(f"{no_desc} items without a description vector")
        if audio_spaces:
            missing = conn.execute(
                "SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM item_data d WHERE d.item_id=i.id "
                "AND d.space=?)",
                (audio_spaces[0],),
            ).fetchone()[0]
            if missing:
                problems.append(f"{missing} items without {audio_spaces[0]} data")
        cols = store.columns()
        alive = set(cols.ids[cols.alive].tolist())
        if alive != set(snapshot):
            problems.append(f"columns: {len(alive - set(snapshot))} extra ids, {len(set(snapshot) - alive)} missing")
        for item_id, (path, digest) in before.items():
            if path in corpus and snapshot.get(item_id) != (path, digest):
                problems.append(f"lost or re-indexed item {item_id} ({path})")
                break
        if final:
            if set(paths) != corpus:
                problems.append(f"not indexed: {len(corpus - set(paths))}, not in corpus: {len(set(paths) - corpus)}")
            failures = conn.execute("SELECT count(*) FROM failures").fetchone()[0]
            if failures:
                problems.append(f"{failures} failures recorded")
    raw = sqlite3.connect(data / "catalog.sqlite")
    try:
        if raw.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("integrity_check (fresh connection) failed")
    finally:
        raw.close()
    return Verdict(not problems, problems, len(snapshot), snapshot)


# -- one kill -----------------------------------------------------------------------------------


@dataclass
class Kill:
    n: int
    kind: str
    at: str = ""  # the last fault point the process reached before it died
    delay_ms: float = 0.0
    reached: bool = True  # whether the aimed point was reached (else the run ended normally)
    items: int = 0
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _stop_spec(kind: str, rng: random.Random) -> str | None:
    if kind.startswith("commit"):
        return f"commit@{rng.randint(1, 4)}"
    if kind == "vectors.save+":
        return "vectors.save"
    if kind == "vectors.sidecar":
        return "vectors.sidecar"
    if kind == "checkpoint+":
        return "checkpoint"
    return None


STAGES = {"commit+": ("commit", None, 5.0), "vectors.save+": ("vectors.save", "vectors.sidecar", 50.0),
          "checkpoint+": ("checkpoint", "checkpoint.end", 5.0)}  # fmt: skip


def _stage_ms(log: Path, kind: str) -> float:
    """How long the stage a ``kind`` kill aims into took in the runs so far (median, from the fault log),
    so the kill lands inside it; the default until one has been seen."""
    start, end, default = STAGES[kind]
    if end is None or not log.exists():
        return default
    began: dict[str, float] = {}
    took = []
    for line in log.read_text().splitlines():
        t, pid, name = line.split(" ", 2)
        if name in (start, start + "+"):  # "+": resumed after a stop there
            began[pid] = float(t)
        elif name == end and pid in began:
            took.append((float(t) - began.pop(pid)) * 1000)
    return float(sorted(took)[len(took) // 2]) if took else default


def kill_once(start, kind: str, rng: random.Random, *, first_commit_timeout: float = 600.0) -> tuple[Victim, Kill]:
    """Start a victim with ``start(stop_spec)`` and kill it the way ``kind`` says."""
    k = Kill(0, kind)
    v = start(_stop_spec(kind, rng))
    if kind == "random":
        # the write phase has begun once the first item commits; then any moment of the next seconds
        began = v.wait_for(lambda: any(n == "commit" for _, n in v.points()), first_commit_timeout)
        k.delay_ms = rng.uniform(0, 4000)
        if began:
            time.sleep(k.delay_ms / 1000)
        k.reached = began and v.proc.poll() is None
    else:
        k.reached = v.stopped(first_commit_timeout)
        if k.reached and kind.endswith("+"):
            k.delay_ms = rng.uniform(0, _stage_ms(v.log, kind))
            v.proc.send_signal(signal.SIGCONT)
            time.sleep(k.delay_ms / 1000)
    k.at = v.last_point()
    if crashed := v.kill():  # it died by itself (a bug, or an import error): that is a failure too
        k.problems.append(crashed)
    return v, k


def run_kills(
    plan: list[str], start, data: Path, corpus_dir: Path, rng: random.Random, *, log=print, mutate: bool = True
) -> tuple[list[Kill], Verdict]:
    """Kill runs as ``plan`` says, verify after each, then let a last run finish and verify it."""
    kills: list[Kill] = []
    before: dict[int, tuple[str, str]] = {}
    removed: list[tuple[Path, str]] = []
    for n, kind in enumerate(plan, 1):
        t0 = time.monotonic()
        if mutate and n in (4, 9) and before:  # delete a few indexed files: the next run drops their items
            for link in rng.sample(sorted(p for p in corpus_dir.iterdir()), 3):
                removed.append((link, os.readlink(link)))
                link.unlink()
        if mutate and n in (7, 13) and removed:  # and put them back: new items
            for link, target in removed:
                os.symlink(target, link)
            removed.clear()
        forgot = 0
        if kind.startswith("vectors") and not _save_pending(data):  # a save to kill needs one to be due
            forgot = _forget_saved_vectors(data)
        _, k = kill_once(start, kind, rng)
        k.n = n
        if forgot:
            k.at += f" (saved indexes removed first: {forgot} files)"
        corpus = {str(p) for p in corpus_dir.iterdir()}
        verdict = verify(data, corpus, before)
        k.problems += verdict.problems
        k.ok, k.items = verdict.ok and not k.problems, verdict.items
        k.seconds = round(time.monotonic() - t0, 2)
        before = {i: v for i, v in verdict.snapshot.items() if v[0] in corpus} if verdict.ok else before
        kills.append(k)
        note = "" if k.reached else "  (aimed point not reached)"
        log(f"kill {n:2d} {kind:16s} at {k.at:18s} +{k.delay_ms:6.1f} ms  items {k.items:4d}  "
            f"{'ok' if k.ok else 'BROKEN: ' + '; '.join(k.problems)}{note}")  # fmt: skip
    for link, target in removed:
        os.symlink(target, link)
    return kills, _finish(start, data, corpus_dir, before, log)


def _finish(start, data: Path, corpus_dir: Path, before, log) -> Verdict:
    v = start(None)
    _, err = v.proc.communicate(timeout=3600)
    verdict = verify(data, {str(p) for p in corpus_dir.iterdir()}, before, final=True)
    if v.proc.returncode != 0:
        verdict.ok = False
        verdict.problems.append(f"exit {v.proc.returncode}: {err.decode(errors='replace').strip()[-500:]}")
    log(f"final run: exit {v.proc.returncode}, items {verdict.items}, "
        f"{'ok' if verdict.ok else 'BROKEN: ' + '; '.join(verdict.problems)}")  # fmt: skip
    return verdict


def cli_plan(n: int, rng: random.Random) -> list[str]:
    """``n`` kills: 60 % while files are analysed and committed, the rest at saves and checkpoints."""
    early = max(1, round(n * 0.6))
    first = ["random", "commit", "commit+"] * n
    late = ["vectors.sidecar", "vectors.save+", "checkpoint+", "vectors.save+", "checkpoint+"] * n
    plan = first[:early]
    rng.shuffle(plan)
    return plan + late[: n - early]


def _save_pending(data: Path) -> bool:
    """Whether the next run will write a vector index (more than DELTA_MAX vectors not in a saved one)."""
    from soundscope.store import Store
    from soundscope.store.vectors import DELTA_MAX

    if not (data / "catalog.sqlite").exists():
        return False
    with Store(data, create=False) as store:
        spaces = [s for s in store.catalog.models() if store._dim(s) > 0]
        return any(store.vectors(s).stale > DELTA_MAX for s in spaces)


def _forget_saved_vectors(data: Path) -> int:
    """Delete the saved vector indexes (rebuildable accelerators, as ``check --repair`` does) so that the
    next run must write them again; returns how many files went."""
    gone = 0
    for f in (data / "vectors").glob("*"):
        f.unlink()
        gone += 1
    return gone


# -- the server ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def server_starter(data: Path, corpus_dir: Path, logfile: Path, asr: str):
    """``start(stop)`` for server victims: serve, wait until it answers, POST an index job."""

    def start(stop: str | None) -> Victim:
        port = _free_port()
        cmd = [sys.executable, "-m", "soundscope.cli", "serve", "--data-dir", str(data), "--port", str(port),
               "--allow-root", str(corpus_dir), "--asr-model", asr]  # fmt: skip
        v = Victim(cmd, logfile, stop)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                _http("GET", f"{base}/api/config", timeout=2)
                break
            except OSError:
                if v.proc.poll() is not None:
                    err = v.proc.communicate()[1].decode()[-2000:]
                    raise RuntimeError(f"the server did not start: {err}") from None
                time.sleep(0.1)
        job = _http("POST", f"{base}/api/index", {"paths": [str(corpus_dir)]})
        v.job_url = f"{base}/api/jobs/{job['id']}"  # type: ignore[attr-defined]
        return v

    return start


def server_finish(start, data: Path, corpus_dir: Path, before, log) -> Verdict:
    v = start(None)
    deadline = time.monotonic() + 3600
    job = {"state": "queued"}
    while job["state"] in ("queued", "scanning", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = _http("GET", v.job_url)  # type: ignore[attr-defined]
    v.proc.send_signal(signal.SIGTERM)
    v.proc.communicate(timeout=60)
    verdict = verify(data, {str(p) for p in corpus_dir.iterdir()}, before, final=True)
    if job["state"] != "done":
        verdict.ok = False
        verdict.problems.append(f"final job {job['state']}: {job.get('error')}")
    log(f"final server job: {job['state']}, items {verdict.items}, "
        f"{'ok' if verdict.ok else 'BROKEN: ' + '; '.join(verdict.problems)}")  # fmt: skip
    return verdict


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--server-kills", type=int, default=6)
    p.add_argument("--esc", type=int, default=400, help="ESC-10 clips in the corpus")
    p.add_argument("--fsdd", type=int, default=150, help="spoken digits in the corpus")
    p.add_argument("--asr-model", default="tiny.en")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    import tempfile

    work = a.work or Path(tempfile.mkdtemp(prefix="soundscope-kill-"))
    rng = random.Random(a.seed)
    t0 = time.monotonic()
    results: dict = {"corpus": {"esc10": a.esc, "fsdd": a.fsdd}, "work": str(work)}

    corpus = work / "corpus"
    files = make_corpus(corpus, esc=a.esc, fsdd=a.fsdd, seed=a.seed)
    data = work / "data"
    print(f"CLI: {len(files)} files in {corpus}, library {data}")
    n = [0]

    def start_cli(stop: str | None) -> Victim:
        n[0] += 1
        return Victim(index_cmd(corpus, data, asr=a.asr_model), work / "faults.log", stop)

    kills, final = run_kills(cli_plan(a.kills, rng), start_cli, data, corpus, rng)
    results["cli"] = {"kills": [asdict(k) for k in kills], "final_ok": final.ok, "final_problems": final.problems,
                      "items": final.items}  # fmt: skip

    if a.server_kills:
        scorpus = work / "server-corpus"
        sfiles = make_corpus(scorpus, esc=min(a.esc, 80), fsdd=min(a.fsdd, 40), seed=a.seed + 1)
        sdata = work / "server-data"
        # serve refuses a data directory that holds no library: start one with a single file
        subprocess.run(index_cmd(sfiles[0], sdata, asr=a.asr_model), env=_env(work / "x.log", None), check=True,
                       capture_output=True)  # fmt: skip
        print(f"server: {len(sfiles)} files in {scorpus}, library {sdata}")
        start_srv = server_starter(sdata, scorpus, work / "server-faults.log", a.asr_model)
        plan = (["random", "commit", "commit+"] * a.server_kills)[: a.server_kills]
        skills: list[Kill] = []
        before: dict[int, tuple[str, str]] = {}
        for i, kind in enumerate(plan, 1):
            t1 = time.monotonic()
            _, k = kill_once(start_srv, kind, rng)
            k.n = i
            verdict = verify(sdata, {str(p) for p in scorpus.iterdir()}, before)
            k.problems += verdict.problems
            k.ok, k.items, k.seconds = verdict.ok and not k.problems, verdict.items, time.monotonic() - t1
            before = verdict.snapshot if verdict.ok else before
            skills.append(k)
            print(f"server kill {i} {kind:8s} at {k.at:14s} +{k.delay_ms:6.1f} ms  items {k.items:4d}  "
                  f"{'ok' if k.ok else 'BROKEN: ' + '; '.join(k.problems)}")  # fmt: skip
        sfinal = server_finish(start_srv, sdata, scorpus, before, print)
        results["server"] = {"kills": [asdict(k) for k in skills], "final_ok": sfinal.ok,
                             "final_problems": sfinal.problems, "items": sfinal.items}  # fmt: skip

    survived = sum(k.ok for k in kills)
    results["summary"] = {
        "cli_kills": len(kills),
        "cli_survived": survived,
        "cli_final_ok": final.ok,
        "server_kills": len(results.get("server", {}).get("kills", [])),
        "server_survived": sum(k["ok"] for k in results.get("server", {}).get("kills", [])),
        "server_final_ok": results.get("server", {}).get("final_ok"),
        "kinds": sorted({k.kind for k in kills}),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(results["summary"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    ok = survived == len(kills) and final.ok and results.get("server", {}).get("final_ok", True) is not False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
