"""Lab-server readiness: optional login, session isolation, one shared model used safely, temporary files, security.

The security checks read the source of ``app.py``, ``pages/``, ``ui/`` and
``core/`` with ``ast``: no user file is unpickled, ``torch.load`` always has
``weights_only=True``, uploaded file names never reach a path, and pages write
nothing to the server's disk except through the per-session temporary folder.
"""
from __future__ import annotations

import ast
import gc
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s" * 32, "client_id": "orelens",
        "client_secret": "not-a-secret", "server_metadata_url": "https://id.example.org/.well-known/openid-configuration"}




def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


# --------------------------------------------------------------------------- login


def test_no_secrets_means_no_login():
    at = _app()
    at.run()
    assert not at.exception
    assert any(b.label == "Load demo sample" for b in at.sidebar.button)
    assert not any("Log in" in b.label for b in at.button)


def test_auth_section_requires_login_before_any_page():
    at = _app()
    at.secrets["auth"] = AUTH
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Log in"]
    assert not len(at.sidebar.button)  # nothing of the app is reachable
    at.button[0].click().run()
    assert not at.exception
    # the test runner has no identity provider to reach (and no secrets file for st.login): the user sees why
    # instead of a traceback, and still nothing but the login
    assert len(at.error) == 1 and at.error[0].value.startswith("Login is configured but cannot start: ")
    assert [b.label for b in at.button] == ["Log in"] and not len(at.sidebar.button)
    assert "images" not in at.session_state


def test_named_providers_get_one_button_each():
    at = _app()
    at.secrets["auth"] = {**AUTH, "google": {"client_id": "a", "client_secret": "b",
                                             "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration"}}
    at.run()
    assert not at.exception
    assert "Log in with google" in [b.label for b in at.button]


# --------------------------------------------------------------------------- sessions


def test_two_sessions_never_share_images():
    import os

    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"  # both sessions start empty; A then loads the demo
    a, b = _app(), _app()
    a.run()
    b.run()
    a.sidebar.button[0].click().run()  # Load demo sample in session A only
    b.run()
    assert len(a.session_state["images"]) == 3
    assert len(b.session_state["images"]) == 0
    assert "image(s) in this session" not in " ".join(c.value for c in b.sidebar.caption)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch

    from core.segmentation import create_model, save_model

    torch.set_num_threads(1)
    torch.manual_seed(1)
    classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    cfg = {"name": "tiny", "architecture": "pspnet", "encoder": "resnet18", "in_channels": 3, "classes": classes,
           "scale": 1.0, "tile": 64, "overlap": 16, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    return save_model(tmp_path_factory.mktemp("m") / "tiny", create_model("pspnet", "resnet18", classes=10), cfg)


def test_model_is_loaded_once_and_safe_from_concurrent_sessions(tiny_model_dir):
    import torch

    from core.segmentation import predict
    from ui import state

    torch.set_num_threads(1)
    m1 = state.get_model(str(tiny_model_dir), "cpu")
    m2 = state.get_model(str(tiny_model_dir), "cpu")
    assert m1 is m2  # one instance per server
    assert hasattr(m1.lock, "acquire")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    serial = [predict(m1, im).labels for im in images]
    out: list = [None] * 4
    errs: list = []

    def work(i):
        try:
            out[i] = predict(m1, images[i]).labels
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errs.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errs, errs
    for s, o in zip(serial, out):
        assert np.array_equal(s, o)  # no session receives another session's result


# --------------------------------------------------------------------------- temporary files


def test_session_tmp_is_private_and_removed():
    from ui.session_tmp import SessionTmp

    a, b = SessionTmp(), SessionTmp()
    assert a.path != b.path and a.path.is_dir()
    (a.path / "x.png").write_bytes(b"data")
    pa = a.path
    a.cleanup()
    assert not pa.exists() and b.path.is_dir()
    pb = b.path
    del b
    gc.collect()
    assert not pb.exists()  # dropping the session's state removes the folder


def test_folders_of_dead_servers_are_swept(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from ui import session_tmp

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"orelens-session-{int(dead.stdout)}-abc"
    orphan.mkdir()
    live = session_tmp.SessionTmp()
    assert live.path.parent == tmp_path
    assert session_tmp.sweep_orphans() == 1
    assert not orphan.exists() and live.path.is_dir()  # this server's folders stay
    live.cleanup()


def test_session_tmp_inside_a_running_app():
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from ui import session_tmp

        p = session_tmp.session_path("../../etc/passwd", suffix=".png")
        p.write_bytes(b"x")
        st.session_state["where"] = str(p)
        st.session_state["dir"] = str(session_tmp.session_dir())
        if st.button("end"):
            session_tmp.cleanup()

    at = AppTest.from_function(script)
    at.run()
    assert not at.exception
    where, d = Path(at.session_state["where"]), Path(at.session_state["dir"])
    assert where.parent == d.resolve() and where.name == "passwd.png"
    at2 = AppTest.from_function(script)
    at2.run()
    assert Path(at2.session_state["dir"]) != d  # another user, another folder
    assert where.read_bytes() == b"x" and Path(at2.session_state["dir"]).is_dir()
    at.button[0].click().run()
    assert not d.exists() and Path(at.session_state["dir"]) == d  # written to once more, then removed
    assert Path(at2.session_state["dir"]).is_dir()  # the other session's folder stays
    at.run()
    assert Path(at.session_state["dir"]) != d and Path(at.session_state["dir"]).is_dir()  # a fresh one on next use


# --------------------------------------------------------------------------- security review of the source


def _sources(*dirs: str) -> list[Path]:
    files = [ROOT / "app.py"] if "app.py" in dirs else []
    for d in dirs:
        if d != "app.py":
            files += sorted((ROOT / d).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _calls(path: Path):
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:  # a file being written right now by someone else
        pytest.skip(f"{path.relative_to(ROOT)} does not parse yet: {e}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_no_unpickling_and_torch_load_is_weights_only():
    bad = []
    for f in _sources("app.py", "core", "ui", "pages"):
        for c in _calls(f):
            name = _call_name(c)
            kw = {k.arg: k.value for k in c.keywords}
            where = f"{f.relative_to(ROOT)}:{c.lineno}"
            if name.endswith("torch.load") or name == "load" and "weights_only" in kw:
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "joblib.load", "dill.load", "cloudpickle.load", "marshal.loads"):
                bad.append(f"{where}: {name}")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                ap = kw.get("allow_pickle")
                if isinstance(ap, ast.Constant) and ap.value is True:
                    bad.append(f"{where}: np.load(allow_pickle=True)")
    assert not bad, bad


_PATH_SINKS = ("open", "Path", "os.path.join", "pathlib.Path", "write_image", "write_mask", "cio.write_image",
               "cio.write_mask", "shutil.copy", "os.makedirs", "mkdir")


def test_uploaded_names_never_become_paths():
    """No ``<upload>.name`` flows straight into a path; names go through ``core.io.safe_name`` first."""
    bad = []
    for f in _sources("app.py", "ui", "pages"):
        for c in _calls(f):
            name = _call_name(c)
            if not any(name == s or name.endswith("." + s) for s in _PATH_SINKS):
                continue
            for arg in [*c.args, *(k.value for k in c.keywords)]:
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Attribute) and sub.attr == "name" and not (
                            isinstance(sub.value, ast.Name) and sub.value.id in ("p", "path", "f", "item", "model")):
                        bad.append(f"{f.relative_to(ROOT)}:{c.lineno}: {name}(... .name ...)")
    assert not bad, bad


def test_pages_write_nothing_outside_the_session_folder():
    """Results leave the server only through download buttons: pages do not write files themselves."""
    bad = []
    for f in _sources("pages"):
        src = f.read_text()
        for c in _calls(f):
            name = _call_name(c)
            mode = c.args[1] if name == "open" and len(c.args) > 1 else next(
                (k.value for k in c.keywords if k.arg == "mode"), None)
            writes = (name == "open" and isinstance(mode, ast.Constant) and any(m in str(mode.value) for m in "wax")) or \
                name.endswith(("write_image", "write_mask", "write_bytes", "write_text", ".imwrite", ".to_csv", ".to_excel", ".savefig"))
            in_memory = bool(c.args) and isinstance(c.args[0], ast.Name) and c.args[0].id in ("buf", "buffer", "bio")
            if writes and c.args and not in_memory and "session_tmp" not in src:
                # to_csv()/to_excel() without a path return bytes for a download button; those are fine
                if name.endswith((".to_csv", ".to_excel")) and not c.args:
                    continue
                bad.append(f"{f.relative_to(ROOT)}:{c.lineno}: {name}")
    assert not bad, bad


def test_core_never_imports_streamlit():
    offenders = []
    for f in _sources("core"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m.split(".")[0] == "streamlit" for m in mods):
                offenders.append(str(f.relative_to(ROOT)))
    assert not offenders, offenders
