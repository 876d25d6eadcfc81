"""OreLens web dashboard: ``streamlit run app.py``."""
from __future__ import annotations

import os

import streamlit as st

st.set_page_config(page_title="OreLens", page_icon="🔬", layout="wide")

from ui import state  # noqa: E402  (after set_page_config)

# building a saved session, measured on a 2-core server: 26 s for 15 photographs of 8.6 Mpx, 29 s for a 96-Mpx
# panorama
SAVE_SECONDS_PER_MEGAPIXEL = 0.25

PAGES = [
    st.Page("pages/upload_calibrate.py", title="Upload & calibrate", icon="📷", default=True),
    st.Page("pages/stitch.py", title="Stitch", icon="🧩"),
    st.Page("pages/register_xpl.py", title="Register XPL", icon="🔄"),
    st.Page("pages/segment.py", title="Segment", icon="🗺️"),
    st.Page("pages/annotate.py", title="Annotate", icon="✏️"),
    st.Page("pages/statistics.py", title="Statistics", icon="📊"),
]


def require_login() -> None:
    """Optional login for lab servers: active only when ``.streamlit/secrets.toml`` has an ``[auth]`` section."""
    try:
        auth = st.secrets["auth"] if "auth" in st.secrets else None
    except Exception:  # no secrets file: an open server (local use, demos)
        auth = None
    if not auth or st.user.get("is_logged_in", False):
        return
    st.title("OreLens")
    st.write("This OreLens server is for signed-in users.")
    providers = [k for k, v in auth.items() if hasattr(v, "keys")] or [None]
    for provider in providers:
        if st.button(f"Log in with {provider}" if provider else "Log in", type="primary", key=f"login-{provider}"):
            try:
                if provider:
                    st.login(provider)
                else:
                    st.login()
            except Exception as e:  # missing Authlib or an incomplete [auth] section
                st.error(f"Login is configured but cannot start: {e}")
    st.stop()


def autoload_demo() -> None:
    """A new session starts on the demo sample (ORELENS_AUTOLOAD_DEMO=0 turns this off)."""
    if os.environ.get("ORELENS_AUTOLOAD_DEMO", "1") == "0" or st.session_state.get("_demo_autoloaded"):
        return
    st.session_state["_demo_autoloaded"] = True
    if not state.bucket("images"):
        try:
            state.load_demo()
        except ValueError as e:
            st.error(f"Demo sample could not be loaded: {e}")


def sidebar() -> None:
    state._init()
    with st.sidebar:
        st.markdown("### OreLens")
        st.caption("Ore minerals in reflected-light photographs of polished sections.")
        if st.button("Load demo sample", icon="🧪", width="stretch", key="load-demo"):
            try:
                names = state.load_demo()
                st.toast(f"Loaded {len(names)} demo images")
            except ValueError as e:
                st.error(str(e))
        names = list(state.bucket("images"))
        if names:
            state.image_picker("Current image", key="sidebar-current")
            st.caption(f"{len(names)} image(s) in this session")
            from ui import archive

            # built when clicked, outside this session's script run: the session's buckets are taken now (the
            # same dicts the pages fill); opened again on Upload & calibrate (Open saved work)
            work = state.snapshot()
            st.download_button("Save this session's work", lambda: archive.pack(work),
                               "orelens-session.zip", "application/zip", icon="💾", width="stretch",
                               key="save-session",
                               help="One file with this session's photographs, expert masks, colour corrections, "
                                    "segmentations, annotations, aligned XPL series, point counts and its own models (fine-tuned "
                                    "or opened; about 23 MB each). A reload of the page or a "
                                    "restart of the server starts a new session: open the file on Upload & "
                                    "calibrate (Open saved work) to carry on.", on_click="ignore")
            # the file is built only when the button is pressed, with nothing to show meanwhile: say how long
            megapixels = sum(r["image"].shape[0] * r["image"].shape[1] for r in state.bucket("images").values()) / 1e6
            wait = SAVE_SECONDS_PER_MEGAPIXEL * megapixels
            if wait >= 5:
                st.caption(f"Saving builds the file first: roughly {wait:.0f} s for these {len(names)} image(s) "
                           "before the download starts.")
        else:
            st.caption("No image loaded yet.")
        st.divider()
        models = state.available_models() + list(state.session_models())
        cur = st.session_state["model_dir"]
        if cur and cur not in models and not cur.startswith(state.SESSION_MODEL):
            models.append(cur)  # a model folder chosen outside models/; pages report if it cannot be loaded
        if models:
            idx = models.index(cur) if cur in models else 0
            st.session_state["model_dir"] = st.selectbox("Model", models, index=idx, format_func=state.model_label)
            st.caption(state.model_summary(st.session_state["model_dir"]), help="Scores on images the model never trained on")
        else:
            st.warning("No model found in models/.")
        st.caption(f"Device: {state.device_label()}")


require_login()
state.app_started()
nav = st.navigation(PAGES)
state.open_requested_page()
state.on_page(nav.title)
autoload_demo()
sidebar()
nav.run()
