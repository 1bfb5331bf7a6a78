"""The Streamlit glue, the only part of gptviz that imports streamlit: what pages call.

- `view()` draws the shared sidebar and returns the View (model, tokens, the run shown);
- `derived(run, fn, *args)` caches an analysis under the run's key (store.py);
- settings.py declares every setting (URL, view files), navigation.py every page;
- widgets.py: figures, notes, tables, the position rule, exact head lists, lazy tabs.
"""
from gptviz.ui.models import DEFAULT_ALLOW_MODELS, allowed_models, model_choices
from gptviz.ui.navigation import BY_KEY as PAGES_BY_KEY
from gptviz.ui.navigation import PAGES, link
from gptviz.ui.settings import DEFAULT_PROMPT, SETTINGS
from gptviz.ui.store import (
    ModelRegistry,
    Run,
    RunKey,
    TraceStore,
    computed,
    derived,
    local_model_dirs,
    model_source,
    of_model,
)
from gptviz.ui.view_state import (
    MAX_VIEW_TOKENS,
    View,
    ablation_setting,
    cut_to_context,
    max_tokens,
    set_generated,
    view,
)
from gptviz.ui.widgets import (
    bits,
    chart,
    choose_state,
    clamp_state,
    code,
    components_input,
    download_csv,
    explain,
    fmt_bytes,
    focus,
    fragment,
    matrix_frame,
    percent,
    position,
    position_input,
    sections,
    set_components,
    toggle_component,
    token_input,
    window_note,
)

__all__ = [
    "DEFAULT_ALLOW_MODELS", "DEFAULT_PROMPT", "MAX_VIEW_TOKENS", "ModelRegistry", "PAGES", "PAGES_BY_KEY",
    "Run", "RunKey", "SETTINGS", "TraceStore", "View", "ablation_setting", "allowed_models", "bits", "chart",
    "choose_state", "clamp_state", "code", "components_input", "computed", "cut_to_context", "derived",
    "download_csv", "explain", "fmt_bytes", "focus", "fragment", "link", "local_model_dirs", "matrix_frame",
    "model_source", "max_tokens", "model_choices", "of_model", "percent", "position", "position_input", "sections",
    "set_components", "set_generated", "toggle_component", "token_input", "view", "window_note",
]
