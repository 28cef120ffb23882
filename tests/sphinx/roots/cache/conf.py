extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "cache"  # the cache path is set per test, under tmp_path
nb_execution_raise_on_error = True

# This fixture tests nested cells alone: no model preparation, no stamp cell.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
