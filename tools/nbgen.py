"""Write a notebook from a compact text form: cells separated by lines '# %% [markdown]' or '# %%'.

Used once to create the notebooks in notebooks/ (the .ipynb files are the source of truth);
kept so that a new experiment notebook can be started the same way:
    python tools/nbgen.py spec.py notebooks/NN_name.ipynb
A code cell whose first line is '# parameters' gets papermill's 'parameters' tag.
"""

import sys

import nbformat


def build(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    chunks = text.split("# %%")
    for chunk in chunks[1:]:
        head, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if head.strip() == "[markdown]":
            src = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if body.startswith("# parameters"):
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    nbformat.write(build(open(sys.argv[1]).read()), sys.argv[2])
