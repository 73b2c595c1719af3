"""corec-generator: scaffolds for corec-plugin-kit (processor package, React and FastAPI sites).

Actions ``generate_plugin`` and ``generate_website``, CLI ``corec-kit generator ...``; see
docs/generator.md. Importing this package loads nothing heavy (jinja2 is imported on first use).
"""

__version__ = "0.1.0"

#: Written into every generated project: template, versions and answers, to regenerate from.
ANSWERS_FILE = ".corec-answers.json"

__all__ = ["ANSWERS_FILE", "__version__"]
