"""gptviz: look inside a GPT while it reads your prompt. Entry point: routes to the pages."""
import streamlit as st

st.set_page_config(page_title="gptviz", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/account_tree:", default=True),
    st.Page("pages/tokens.py", title="Tokens", icon=":material/text_fields:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
    st.Page("pages/inside_block.py", title="Inside a block", icon=":material/view_agenda:"),
    st.Page("pages/next_token.py", title="Next token", icon=":material/casino:"),
    st.Page("pages/compare_heads.py", title="Compare heads", icon=":material/compare:"),
    st.Page("pages/logit_lens.py", title="Logit lens", icon=":material/layers:"),
    st.Page("pages/why.py", title="Why this token?", icon=":material/psychology_alt:"),
    st.Page("pages/attention_at_scale.py", title="Attention at scale", icon=":material/trending_up:"),
]

st.navigation(PAGES).run()  # each page draws the shared sidebar through ui.view()
