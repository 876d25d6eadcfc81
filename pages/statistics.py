"""Statistics page."""
import streamlit as st

from ui import state, widgets

st.header("Statistics")
name, image = state.current_image()
if image is None:
    state.no_image_hint()
else:
    widgets.show_image(image, name, key="statistics")
st.warning("The statistics step is not built yet in this version; the image above is the input it will work on.")
