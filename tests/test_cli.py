"""The command line contract: --data-dir / SOUNDSCOPE_DATA_DIR, --json shapes, exit codes."""

import json
import os
import subprocess
import sys

import pytest

from soundscope import cli
from tests.conftest import DEMO


def run_cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run(
        [sys.executable, "-m", "soundscope.cli", *args], capture_output=True, text=True, env=full_env, timeout=300
    )
    return out.returncode, out.stdout, out.stderr


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A data dir with the demo corpus plus two bad files, indexed through the CLI (env var for the dir)."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus"
    corpus.mkdir()
    for rel in [
        "sounds/dog/1-30344-A.ogg",
        "sounds/rain/1-17367-A.ogg",
        "sounds/rain/1-21189-A.ogg",
        "music/sorohanro_-_solo-trumpet-06.ogg",
    ]:
        (corpus / os.path.basename(rel)).write_bytes((DEMO / rel).read_bytes())
    (corpus / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    (corpus / "empty.flac").write_bytes(b"")
    data = root / "data"
    code, out, _err = run_cli("index", str(corpus), "--json", env={"SOUNDSCOPE_DATA_DIR": str(data)})
    return data, corpus, code, json.loads(out)


def test_index_json_and_exit_code(indexed):
    _, _, code, report = indexed
    assert code == 1  # some files failed
    assert (report["indexed"], report["unchanged"], report["removed"], report["failed"]) == (4, 0, 0, 2)
    assert {os.path.basename(f["path"]) for f in report["failures"]} == {"broken.wav", "empty.flac"}
    assert all(f["reason"] for f in report["failures"])


def test_search_and_similar_json(indexed):
    data, corpus, _, _ = indexed
    code, out, _ = run_cli("search", "rain", "--json", "--limit", "2", "--data-dir", str(data))
    results = json.loads(out)
    assert code == 0 and len(results) == 2
    for r in results:
        assert {"path", "score", "start", "why"} <= set(r) and os.path.isabs(r["path"])
    assert all("1-" in os.path.basename(r["path"]) for r in results)
    code, out, _ = run_cli("similar", str(corpus / "1-17367-A.ogg"), "--json", "--limit", "1", "--data-dir", str(data))
    assert json.loads(out)[0]["path"] == str(corpus / "1-21189-A.ogg")


def test_show_stats_failures(indexed, capsys):
    data, _, _, _ = indexed
    assert cli.main(["stats", "--json", "--data-dir", str(data)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == 4 and stats["failures"] == 2 and "yamnet" in stats["models"]
    assert cli.main(["show", "1", "--data-dir", str(data)]) == 0
    assert "yamnet:" in capsys.readouterr().out
    assert cli.main(["show", "999", "--data-dir", str(data)]) == 2
    assert "no item with id 999" in capsys.readouterr().err
    assert cli.main(["failures", "--json", "--data-dir", str(data)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_rerun_is_incremental(indexed):
    data, corpus, _, _ = indexed
    code, out, _ = run_cli("index", str(corpus), "--json", "--data-dir", str(data))
    report = json.loads(out)
    assert report["indexed"] == 0 and report["unchanged"] == 4 and report["failed"] == 2 and code == 1


def test_incompatible_index_is_refused(tmp_path, capsys):
    from soundscope.store import Store

    with Store(tmp_path) as store:
        store.catalog.register_model("yamnet", "yamnet/some-other-weights", {}, 1024, ["x"])
    assert cli.main(["index", str(DEMO / "sounds" / "dog"), "--data-dir", str(tmp_path), "-q"]) == 2
    assert "cannot be mixed" in capsys.readouterr().err


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["index", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"), "-q"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["search", "rain"], ["similar", "1"], ["show", "1"], ["transcript", "1"], ["stats"], ["failures"], ["serve"]],
)
def test_read_only_commands_refuse_a_missing_library(tmp_path, capsys, argv):
    """A typo in --data-dir must not create an empty library: read-only commands exit 2 and say so."""
    missing = tmp_path / "typo"
    assert cli.main([*argv, "--data-dir", str(missing)]) == 2
    assert f"no library at {missing}; run soundscope index first" in capsys.readouterr().err
    assert not missing.exists()


def test_eval_and_bench_leave_no_library_in_the_data_dir(tmp_path, capsys, monkeypatch):
    """They build their own libraries in work folders: the user's data dir stays as it was (it used to get
    an empty catalog)."""
    home = tmp_path / "home"
    monkeypatch.setenv("SOUNDSCOPE_DATA_DIR", str(home))
    argv = ["eval", "--section", "esc10", "--esc10", str(tmp_path / "none"), "--data-dir", str(tmp_path / "work")]
    assert cli.main(argv) == 2 and "ESC-10 not found" in capsys.readouterr().err
    assert not home.exists() and not (tmp_path / "work" / "catalog.sqlite").exists()


def test_library_api_refuses_a_missing_library_for_search(tmp_path):
    import soundscope
    from soundscope.store import NoLibraryError

    with pytest.raises(NoLibraryError, match="no library at"):
        soundscope.search("rain", data_dir=tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_command_runs_blas_on_one_thread():
    """numpy (and its OpenBLAS pool) is loaded before a command parses its arguments, so setting
    OPENBLAS_NUM_THREADS then came too late: queries ran two busy BLAS threads. The pools loaded are
    resized; a value the user set still wins."""
    from soundscope.threads import VARS

    code = (
        "import numpy, soundscope.cli as c; c._configure_threads(); from threadpoolctl import threadpool_info; "
        "print(max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    one = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert one.stdout.strip() == "1"
    env["OPENBLAS_NUM_THREADS"] = "2"
    two = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert two.stdout.strip() == "2"
