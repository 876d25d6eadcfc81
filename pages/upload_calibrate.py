"""Upload & calibrate page."""
import streamlit as st

from ui import state, widgets

st.header("Upload & calibrate")
name, image = state.current_image()
if image is None:
    state.no_image_hint()
else:
    widgets.show_image(image, name, key="upload_calibrate")
st.warning("The colour calibration step is not built yet in this version; the image above is the input it will work on.")
