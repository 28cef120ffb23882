extensions = ["myst_nb", "qwen_docs_helpers.sphinx"]
exclude_patterns = ["_build"]
suppress_warnings = ["toc.not_included"]
html_theme = "basic"
nb_execution_mode = "cache"  # as on the site; the tests set the cache path per build, and force mode in one
nb_execution_timeout = 60
nb_merge_streams = True  # as the site sets it: under load one print can reach the notebook in several outputs
nb_execution_raise_on_error = False
nb_execution_show_tb = False
# Only the kernel's death is under test: no model preparation, no stamp cell.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
