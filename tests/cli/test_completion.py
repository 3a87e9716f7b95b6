"""Shell completion as the README sets it up: the installed `mercato` prints its
completion script, and bash, having sourced it, completes commands and choices."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MERCATO = Path(sys.executable).parent / "mercato"  # the console script, as installed
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_line(shell: str) -> str:
    """The line the README's "Shell completion" tells users of ``shell`` to add."""
    section = README.read_text().split("**Shell completion.**", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    (line,) = [line for line in block.splitlines() if f"={shell}_source mercato" in line]
    return line.split("  #", 1)[0].strip()


def source(shell: str) -> str:
    done = subprocess.run(
        [str(MERCATO)],
        env={**os.environ, "_MERCATO_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def bash_completes(*words: str) -> list[str]:
    """What bash offers for ``mercato WORDS`` (the last word being typed), after
    the README's ``eval "$(_MERCATO_COMPLETE=bash_source mercato)"``."""
    typed = " ".join(f"'{word}'" for word in words)
    script = (
        f"{readme_line('bash')}\n"
        f"COMP_WORDS=(mercato {typed}); COMP_CWORD={len(words)}\n"
        # The function `complete` registered for `mercato`, called as bash calls it.
        "$(complete -p mercato | sed -E 's/.* -F ([^ ]+) .*/\\1/') mercato\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    path = f"{MERCATO.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # as once installed
    done = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.split()


def test_the_installed_command_prints_a_completion_script_for_each_shell() -> None:
    assert MERCATO.exists()
    assert readme_line("bash") == 'eval "$(_MERCATO_COMPLETE=bash_source mercato)"'
    assert readme_line("zsh") == 'eval "$(_MERCATO_COMPLETE=zsh_source mercato)"'
    assert readme_line("fish") == "env _MERCATO_COMPLETE=fish_source mercato | source"
    assert "complete -o nosort -F _mercato_completion" in source("bash")
    assert source("zsh").startswith("#compdef mercato")
    assert "complete --no-files --command mercato" in source("fish")


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("bu",), ["builds", "buy"]),
        (("node", "st"), ["start", "status", "stop"]),
        (("node", "start", "--role", ""), ["full", "relay"]),
    ],
)
def test_bash_completes_commands_and_choices(words: tuple[str, ...], offered: list[str]) -> None:
    assert bash_completes(*words) == offered
