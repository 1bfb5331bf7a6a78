"""gptviz: look inside a GPT while it reads your prompt. Entry point: routes to the pages."""
import streamlit as st

st.set_page_config(page_title="gptviz", page_icon="🔎", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon="🗺️", default=True),
    st.Page("pages/tokens.py", title="Tokens", icon="🔤"),
    st.Page("pages/embeddings.py", title="Embeddings", icon="📍"),
    st.Page("pages/attention.py", title="Attention", icon="👀"),
    st.Page("pages/next_token.py", title="Next token", icon="🎲"),
    st.Page("pages/compare_heads.py", title="Compare heads", icon="🧩"),
    st.Page("pages/logit_lens.py", title="Logit lens", icon="🔭"),
    st.Page("pages/attention_at_scale.py", title="Attention at scale", icon="📈"),
]

st.navigation(PAGES).run()  # each page draws the shared sidebar through ui.view()
