"""inspect and explain: a look inside a model, and which words decided a prediction."""


def add_commands(commands):
    look = commands.add_parser("inspect", help="what every layer and attention head does with one sentence",
                               description="Print the tokens, each layer's hidden-state statistics, each head's "
                                           "attention entropy and the strongest attention links; --plot draws "
                                           "the attention heatmaps (layers x heads).")
    look.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or known name (default %(default)s)")
    look.add_argument("--plot", metavar="PNG", help="write the attention heatmaps to this file (needs matplotlib: "
                                                    "pip install 'minillm[plot]')")
    look.add_argument("--top", type=int, default=3, help="strongest attention links shown per layer")
    look.add_argument("sentence")
    look.set_defaults(run=inspect_command)

    why = commands.add_parser("explain", help="which words decided a classifier's prediction",
                              description="Print the prediction and each word's attribution to a class: integrated "
                                          "gradients from a [PAD] baseline (with its completeness gap), gradient x "
                                          "input, or attention rollout; --html and --plot keep them.")
    why.add_argument("--model", required=True, help="a fine-tuned classifier folder")
    why.add_argument("--method", choices=("ig", "gxi", "rollout"), default="ig",
                     help="ig: integrated gradients (default), gxi: gradient x input, rollout: attention rollout")
    why.add_argument("--steps", type=int, default=50, help="integrated gradients: points on the path (default 50)")
    why.add_argument("--target", type=int, default=None, help="the class to explain (default: the predicted one)")
    why.add_argument("--pair", metavar="TEXT", help="the second text of a pair (e.g. RTE's hypothesis)")
    why.add_argument("--html", metavar="FILE", help="write a self-contained page with the coloured words")
    why.add_argument("--plot", metavar="PNG", help="write a bar chart of the words' attributions (needs "
                                                   "matplotlib: pip install 'minillm[plot]')")
    why.add_argument("sentence")
    why.set_defaults(run=explain_command)


def inspect_command(args):
    from ..inspect import main as inspect

    return inspect(args.model, args.sentence, args.plot, args.top)


def explain_command(args):
    from ..explain.render import main as explain

    return explain(args.model, args.sentence, args.pair, args.method, args.target, args.steps, args.html, args.plot)
