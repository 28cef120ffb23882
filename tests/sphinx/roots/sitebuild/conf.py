extensions = ["myst_nb", "qwen_docs_helpers.sphinx"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_raise_on_error = False
nb_execution_show_tb = False
qwen_docs_prepare_models = False
qwen_docs_stamp = False
