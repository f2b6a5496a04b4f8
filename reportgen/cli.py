"""Command line: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a user error (one ``Error:`` line, no traceback),
2 a usage error (click's own), 130 or 143 a build stopped by SIGINT or SIGTERM (one
``Stopped:`` line). Unexpected exceptions keep their traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reportgen import __version__
from reportgen.core.errors import ReportgenError


def _fail(exc: ReportgenError) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(1)


def _fail_env(exc: OSError) -> None:
    """A file system failure the library did not name itself (disk full, permissions)."""
    where = f"{exc.filename}: " if exc.filename else ""
    click.echo(f"Error: {where}{exc.strerror or exc}; check that the path exists and is writable "
               "and that the disk has space, then build again", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reportgen")
def cli() -> None:
    """Turn trained CNNs into a browsable MkDocs report."""


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--docs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"),
              show_default=True, help="MkDocs docs directory; the report goes to DIR/<report>/.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
              help="Where to run the networks; auto uses CUDA when available.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (nothing is written).")
# Any path: a cache that cannot be used is a warning, not an error (the build goes on without it).
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Cache of results between builds [default: $REPORTGEN_CACHE_DIR or .reportgen-cache].")
@click.option("--no-cache", is_flag=True, help="Compute everything again and store nothing.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Runs analysed at once, each in a worker process; 1 analyses them one after another "
                   "in this process [default: $REPORTGEN_JOBS, else the cores this process may use].")
@click.option("--executor", type=click.Choice(["sequential", "process", "ray"]), default=None,
              help="Where the per-run tasks run [default: process when --jobs is above 1, else sequential].")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="The Ray cluster for --executor ray [default: a local Ray instance].")
@click.option("--force", is_flag=True, help="Build even when the published report is up to date.")
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings, errors and the summary.")
@click.option("-v", "--verbose", is_flag=True, help="Print each step and the cache hits per kind.")
def build(spec: Path, docs_dir: Path, device: str, strict: bool, cache_dir: Path | None, no_cache: bool,
          jobs: int | None, executor: str | None, ray_address: str | None, force: bool, quiet: bool,
          verbose: bool) -> None:
    """Build the report described by SPEC.

    When nothing it depends on has changed since the last build (see reportgen.publish.uptodate),
    it says so and stops before loading torch or any model.

    Ctrl-C (SIGINT) or SIGTERM stops it cleanly: the previous report is left as it was, and
    it exits with status 130 or 143.
    """
    from reportgen.core.stopping import exit_status, on_signals

    with on_signals() as stop:  # reportgen.core.stopping
        try:
            result = _build(spec, docs_dir, device, strict, cache_dir, no_cache, jobs, executor, ray_address,
                            force, quiet, verbose)
        except BaseException:
            if stop.signum is None:
                raise
            _stopped(stop.signum, stop.report)
        if stop.signum is not None:  # it came once the new report was in place: the build finished
            done = f"it had published {result.out_dir}, which is complete" if result else "it was done"
            click.echo(f"Stopped: reportgen build received {_signal_name(stop.signum)} after {done}", err=True)
            sys.exit(exit_status(stop.signum))


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def _stopped(signum: int, report: Path | None) -> None:
    """One line for a build stopped by a signal, once its clean-up has run; exit 128 + signum."""
    from reportgen.core.stopping import exit_status

    if report is None:  # stopped before the spec was read
        tail = " before it wrote anything"
    elif report.is_dir():
        tail = f"; the previous report in {report} is unchanged"
    else:
        tail = f"; nothing was written to {report}"
    click.echo(f"Stopped: reportgen build was interrupted by {_signal_name(signum)}{tail}", err=True)
    sys.exit(exit_status(signum))


def _build(spec: Path, docs_dir: Path, device: str, strict: bool, cache_dir: Path | None, no_cache: bool,
           jobs: int | None, executor: str | None, ray_address: str | None, force: bool, quiet: bool,
           verbose: bool):
    """The build command's work; returns the BuildResult, or None when the report was up to date."""
    if not (force or no_cache) and _up_to_date(spec, docs_dir, device, strict):
        return None
    from reportgen.build import build as run_build
    from reportgen.core.progress import Progress
    from reportgen.run.cores import default_jobs

    progress = Progress(enabled=not quiet, verbose=verbose)
    cache = None if no_cache else (cache_dir or True)
    try:
        with progress:
            result = run_build(spec, docs_dir, device=device, strict=strict, log=progress, cache_dir=cache,
                               jobs=jobs or _env_jobs() or default_jobs(), executor=executor,
                               ray_address=ray_address)
    except ReportgenError as exc:
        _fail(exc)
    except OSError as exc:
        _fail_env(exc)
    from reportgen.publish.scaffold import refresh_index

    refresh_index(docs_dir)  # the site's root lists every report, unless docs/index.md is the user's own
    for w in result.warnings:
        click.echo(f"Warning: {w}", err=True)
    if verbose:
        for kind in sorted(set(result.cache.hits) | set(result.cache.misses)):
            click.echo(f"  cache {kind}: {result.cache.hits[kind]} hits, {result.cache.misses[kind]} computed",
                       err=True)
    click.echo(
        f"Built {result.out_dir} in {result.seconds:.1f} s: {result.pages} pages, {result.images} images, "
        f"{len(result.report['findings'])} findings, {len(result.warnings)} warnings, {result.cache.summary()}."
    )
    return result


def _env_jobs() -> int | None:
    """$REPORTGEN_JOBS as a positive number of jobs, if set to one."""
    import os

    value = os.environ.get("REPORTGEN_JOBS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _up_to_date(spec: Path, docs_dir: Path, device: str, strict: bool) -> bool:
    """Print the published report's summary and return True when it is up to date."""
    from reportgen.publish.uptodate import up_to_date

    try:
        done = up_to_date(spec, docs_dir, device, strict)
    except ReportgenError as exc:
        _fail(exc)
    except OSError as exc:
        _fail_env(exc)
    if done is None:
        return False
    for w in done.warnings:
        click.echo(f"Warning: {w}", err=True)
    s = done.summary
    click.echo(f"Up to date: {done.out_dir}: {s.get('pages')} pages, {s.get('images')} images, "
               f"{s.get('findings')} findings, {len(done.warnings)} warnings; nothing it depends on changed "
               "(--force builds anyway).")
    return True


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--docs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"),
              show_default=True, help="MkDocs docs directory; its site's mkdocs.yml is checked too.")
def check(spec: Path, docs_dir: Path) -> None:
    """Validate SPEC, load every checkpoint on the CPU and resolve every layer."""
    from reportgen.commands.check import check_spec
    from reportgen.core.errors import SpecError

    try:
        summary = check_spec(spec)
    except SpecError as exc:  # check lists every problem of every stage: one line each
        for problem in exc.problems:
            click.echo(f"Error: {problem}", err=True)
        sys.exit(1)
    except ReportgenError as exc:
        _fail(exc)
    click.echo(summary)
    from reportgen.publish.siteconfig import site_warnings

    for w in site_warnings(docs_dir):
        click.echo(f"Warning: {w}", err=True)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
def layers(spec: Path) -> None:
    """List every layer of SPEC's models with weight and output shapes."""
    from reportgen.commands.layers import list_layers

    try:
        click.echo(list_layers(spec))
    except ReportgenError as exc:
        _fail(exc)


@cli.command()
@click.argument("arch")
@click.option("--checkpoint", help="A checkpoint of the model (checked to fit the architecture).")
@click.option("--arch-args", default="{}", help='Keyword arguments as JSON, e.g. \'{"width": 64}\'.')
@click.option("--images", default="../images/*.jpg", show_default=True,
              help="Test-image glob, relative to the spec.")
@click.option("--size", type=int, default=None,
              help="Input height and width [default: inferred with a dry forward pass].")
@click.option("--channels", type=click.Choice(["rgb", "grey"]), default="rgb", show_default=True)
@click.option("--normalise", type=click.Choice(["none", "imagenet"]), default="none", show_default=True,
              help="Input normalisation the model was trained with.")
@click.option("--trusted", is_flag=True, help="The checkpoint (or .pt2 program) holds Python objects you trust.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("specs/report.yaml"), show_default=True, help="Where to write the spec.")
def init(arch: str, checkpoint: str | None, arch_args: str, images: str, size: int | None, channels: str,
         normalise: str, trusted: bool, output: Path) -> None:
    """Write a commented spec for your model ARCH ('file.py:Class', 'package.module:factory', 'model.pt2'
    or 'model.onnx'), and a minimal mkdocs.yml and docs/index.md here when they are absent."""
    import json

    from reportgen.commands.init import init_spec

    try:
        args = json.loads(arch_args)
        if not isinstance(args, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        click.echo(f"Error: --arch-args must be a JSON object like '{{\"width\": 64}}' ({exc})", err=True)
        sys.exit(1)
    try:
        click.echo(init_spec(arch, output, checkpoint, args, images, size, channels, trusted, normalise))
    except ReportgenError as exc:
        _fail(exc)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--docs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"),
              show_default=True)
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N")
@click.option("-a", "--dev-addr", default="127.0.0.1:8000", show_default=True, help="Address to serve on.")
@click.option("-f", "--config-file", type=click.Path(dir_okay=False, path_type=Path), default=Path("mkdocs.yml"),
              show_default=True, help="The MkDocs configuration (a minimal one is written when absent).")
def serve(spec: Path, docs_dir: Path, device: str, dev_addr: str, config_file: Path) -> None:
    """Build SPEC's report, then preview the site with live reload (mkdocs serve).

    The site's home page lists the reports unless docs/index.md is your own page.
    SIGINT (Ctrl-C) and SIGTERM stop the preview server too.
    """
    import os

    from reportgen.build import build as run_build
    from reportgen.core.progress import Progress
    from reportgen.publish.scaffold import mkdocs_yml, refresh_index, write_if_absent

    docs_rel = os.path.relpath(docs_dir.resolve(), config_file.resolve().parent)
    if write_if_absent(config_file, mkdocs_yml("Reports", docs_rel)):
        click.echo(f"Wrote a minimal {config_file} (docs_dir: {docs_rel}).")
    try:
        with Progress() as progress:
            result = run_build(spec, docs_dir, device=device, log=progress)
    except ReportgenError as exc:
        _fail(exc)
    except OSError as exc:
        _fail_env(exc)
    if not refresh_index(docs_dir):
        click.echo(f"{docs_dir / 'index.md'} is your own page: link {result.out_dir.name}/index.md from it.")
    click.echo(f"Built {result.out_dir}; serving on http://{dev_addr}/ (Ctrl-C stops)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    sys.exit(_run_until_signal([sys.executable, "-m", "mkdocs", "serve", "-f", str(config_file),
                                "-a", dev_addr], env))


def _run_until_signal(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` until it exits, or until this process gets SIGINT or SIGTERM, which stop
    it too (a preview server must not outlive the command that started it). Returns the
    exit status to use: the child's, or 0 when stopped by a signal."""
    import signal
    import subprocess

    child = subprocess.Popen(cmd, env=env)
    stopped = []

    def stop(signum, _frame) -> None:
        stopped.append(signum)
        if child.poll() is None:
            child.terminate()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        if child.poll() is None:  # an exception in this process: never leave the server behind
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopped else code


@cli.command("install-onnx")
def install_onnx() -> None:
    """Install the ONNX converter (onnx2torch) without its torchvision requirement, which
    would replace a CPU build of torch with a CUDA one. Run it after pip install "reportgen[onnx]"."""
    from reportgen.commands.install_onnx import install_onnx as run_install

    try:
        run_install(echo=click.echo)
    except ReportgenError as exc:
        _fail(exc)
    click.echo("Installed onnx2torch: ONNX models (spec key 'onnx') can now be loaded.")


@cli.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editor completion and checking)."""
    from reportgen.commands.schema import schema_text

    click.echo(schema_text(), nl=False)


def main() -> None:
    cli(prog_name="reportgen")


if __name__ == "__main__":
    main()
