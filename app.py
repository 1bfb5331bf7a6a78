"""gptviz: look inside a GPT while it reads your prompt. Entry point: routes to the pages."""
import streamlit as st

from gptviz.ui.navigation import ICON, navigation
from gptviz.ui.settings import save_url

st.set_page_config(page_title="gptviz", page_icon=ICON, layout="wide")
navigation().run()  # each page draws the shared sidebar through ui.view()
save_url()  # what the page itself set (e.g. a default selection) goes into the link too
