"""Training commands: ``modelworks notebook`` (``train`` and ``automl`` join it)."""

from pathlib import Path
from typing import Annotated

import typer

from modelworks.cli.output import err_console


def notebook(
    folder: Annotated[
        Path, typer.Argument(help="Folder for the notebooks; made if missing.")
    ] = Path("notebooks"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port for JupyterLab.")] = 8888,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = (
        False
    ),
) -> None:
    """Open JupyterLab in a project folder with the SDK already connected.

    Every kernel starts with `import modelworks as mw` and `ws = mw.connect()` run for
    you, on the same store (or server) as this command. A new folder gets a starter
    notebook. Needs the notebook extra: pip install 'modelworks\\[notebook]'.

    Example:
      modelworks notebook churn-notebooks --port 8899 --no-browser
    """
    from modelworks.training import notebook as nb

    launch = nb.prepare(folder, port=port, ip=host, open_browser=not no_browser)
    err_console.print(f"JupyterLab for {launch.folder}\nOpen: {launch.url}", soft_wrap=True)
    raise typer.Exit(nb.run(launch))
