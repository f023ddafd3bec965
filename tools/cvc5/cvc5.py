"""cvc5 as an SMT-LIB process, for `lattice-policy prove`.

cvc5 publishes its 1.3.1 release on PyPI as a library (the `cvc5` wheel: libcvc5 and its
parser, with Python bindings) but not as a program, and Debian's cvc5 is 1.0.3, older than
the 1.3.1 that cedar-policy-symcc is verified against. This driver is the program: it reads
SMT-LIB commands on stdin and answers on stdout as `cvc5 --lang smt` does, each command run
by cvc5's own parser, so what it answers is cvc5's answer. Options given as `--name=value`
are set as cvc5 options (symcc passes `--tlimit=...`); `--lang smt` is the only language.

`tools/cvc5/install DIR` installs it as `DIR/bin/cvc5`.
"""

import sys

import cvc5


def commands(stream):
    """Each complete top-level S-expression, as text, as soon as it has arrived."""
    text, depth, mode = [], 0, None
    while True:
        ch = stream.read(1)
        if not ch:
            return
        text.append(ch)
        if mode == "string":
            if ch == '"':
                mode = None
        elif mode == "symbol":
            if ch == "|":
                mode = None
        elif mode == "comment":
            if ch == "\n":
                mode = None
        elif ch == '"':
            mode = "string"
        elif ch == "|":
            mode = "symbol"
        elif ch == ";":
            mode = "comment"
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                yield "".join(text)
                text = []


class Session:
    """A solver, its symbols and its parser; `(reset)` starts a new one, as cvc5 does."""

    def __init__(self, options):
        self.options = options
        self.terms = cvc5.TermManager()
        self.start()

    def start(self):
        self.solver = cvc5.Solver(self.terms)
        for name, value in self.options:
            self.solver.setOption(name, value)
        self.symbols = cvc5.SymbolManager(self.terms)
        self.parser = cvc5.InputParser(self.solver, self.symbols)

    def run(self, text):
        """Runs the command in `text` (one, as `commands` yields them); False once it says
        to exit."""
        self.parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, text, "stdin")
        while True:
            command = self.parser.nextCommand()
            if command.isNull():
                return True
            name = command.getCommandName()
            if name == "reset":
                self.start()
                return True
            out = command.invoke(self.solver, self.symbols)
            if out and not out.endswith("\n"):
                out += "\n"
            sys.stdout.write(out)
            sys.stdout.flush()
            if name == "exit":
                return False


def main(argv):
    options = []
    args = iter(argv)
    for arg in args:
        if arg == "--lang":
            language = next(args, "")
            if language not in ("smt", "smt2", "smtlib2.6"):
                sys.exit(f"cvc5.py: only SMT-LIB input is read, not {language!r}")
        elif arg.startswith("--") and "=" in arg:
            options.append(tuple(arg[2:].split("=", 1)))
        else:
            sys.exit(f"cvc5.py: unknown argument {arg!r}")
    session = Session(options)
    for text in commands(sys.stdin):
        try:
            if not session.run(text):
                return
        except RuntimeError as e:
            message = str(e).replace("\\", "\\\\").replace('"', '\\"')
            sys.stdout.write(f'(error "{message}")\n')
            sys.stdout.flush()
            sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
