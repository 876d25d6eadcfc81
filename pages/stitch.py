"""Stitch page."""
import streamlit as st

from ui import state, widgets

st.header("Stitch")
name, image = state.current_image()
if image is None:
    state.no_image_hint()
else:
    widgets.show_image(image, name, key="stitch")
st.warning("The panorama stitching step is not built yet in this version; the image above is the input it will work on.")
