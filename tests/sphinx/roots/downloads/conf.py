extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_timeout = 120
nb_merge_streams = True  # as the site sets it: under load one print can reach the notebook in several outputs

# No model preparation, and no real stamp cell (it imports torch in every kernel): page.md has a
# hand-made cell tagged qd-stamp, which the stamp transform moves under the title all the same.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
