"""The pages, declared once: title, icon, file and URL path, read by app.py, page links and tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


@dataclass(frozen=True)
class PageInfo:
    key: str  # the file's stem and the URL path
    title: str
    icon: str  # a Material icon, drawn from Streamlit's own bundled font (no download)
    tabs: tuple[tuple[str, str], ...] = ()  # (label, anchor) of the page's lazy tabs, the first open by default

    @property
    def tab_setting(self) -> str | None:
        """The setting (and URL parameter) that holds the open tab."""
        return f"{self.key}_tab" if self.tabs else None

    def tab_of(self, anchor: str) -> str | None:
        """The label of the tab that holds `anchor`."""
        return next((label for label, a in self.tabs if a == anchor), None)

    @property
    def file(self) -> str:
        return f"pages/{self.key}.py"


PAGES = (
    PageInfo("overview", "Overview", ":material/account_tree:"),
    PageInfo("tokens", "Tokens", ":material/text_fields:"),
    PageInfo("embeddings", "Embeddings", ":material/scatter_plot:",
             (("Input vectors", "input-vectors"), ("How alike", "how-alike"), ("Position table", "position-table"))),
    PageInfo("attention", "Attention", ":material/visibility:",
             (("Pattern", "pattern"), ("Step by step", "stages"), ("One query", "one-query"), ("Lines", "lines"),
              ("All heads", "all-heads"))),
    PageInfo("inside_block", "Inside a block", ":material/view_agenda:",
             (("Norm", "norm"), ("Attention", "attention-output"), ("Shortcut", "shortcut"), ("MLP", "ffn"),
              ("Positions", "positions"), ("Dropout", "dropout"))),
    PageInfo("next_token", "Next token", ":material/casino:"),
    PageInfo("compare_heads", "Compare heads", ":material/compare:",
             (("Side by side", "side-by-side"), ("Similarity", "similarity"), ("Scores", "scores"))),
    PageInfo("logit_lens", "Logit lens", ":material/layers:"),
    PageInfo("why", "Why this token?", ":material/psychology_alt:",
             (("Direct attribution", "direct-attribution"), ("Ablation map", "ablation-map"),
              ("Knock out a set", "knock-out"), ("Patching", "patching"))),
    PageInfo("circuit", "Circuit", ":material/hub:",
             (("Graph", "graph"), ("Faithfulness", "faithfulness"), ("Weights vs prompt", "composition"),
              ("Edges", "edges"))),
    PageInfo("attention_at_scale", "Attention at scale", ":material/trending_up:"),
    PageInfo("train", "Train", ":material/model_training:"),
)
ICON = str(Path(__file__).parent.parent / "data" / "icon.png")  # the favicon, served by the app (no font CDN)
BY_KEY = {page.key: page for page in PAGES}
DEFAULT_PAGE = PAGES[0].key


def navigation() -> st.navigation:
    """app.py's router over PAGES (the first is the default, at the app's root URL)."""
    return st.navigation([st.Page(p.file, title=p.title, icon=p.icon, url_path=p.key, default=p.key == DEFAULT_PAGE)
                          for p in PAGES])


def tab_labels(key: str) -> list[str]:
    return [label for label, _ in BY_KEY[key].tabs]


def link(key: str, label: str | None = None, help: str | None = None) -> None:
    """A link to a page (keeps the session's settings)."""
    page = BY_KEY[key]
    st.page_link(page.file, label=label or page.title, icon=page.icon, help=help)


def leave_pages_folder_mode() -> None:
    """Streamlit runs a page file on its own, without app.py's st.navigation, when the first
    request of a process opens a page URL directly: a folder named pages/ next to the entry point
    makes it use its old multipage mode, and no public setting turns that off (st.navigation
    itself clears this flag once it runs). The page still works, as it draws the sidebar itself;
    clearing the flag and running again sends this run and every later one through app.py's
    navigation (its page titles and icons, not the file names)."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
