extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
suppress_warnings = ["toc.not_included"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_timeout = 60
nb_execution_raise_on_error = False
nb_execution_show_tb = False
nb_render_markdown_format = "myst"
qwen_docs_models = ["Qwen/Qwen2-7B-Instruct"]
# qwen_docs_cache_dir is set by the test to the test session's stand-in cache
nb_scroll_outputs = True  # as the site: the stamp must still show whole
nb_render_plugin = "qwen_docs"  # as the site: error outputs by sphinx/error_outputs.py
