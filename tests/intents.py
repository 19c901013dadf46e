"""A small hand-written labelled set for the classify, cluster and dedup tests: three separate intents."""

INTENTS = {
    "card": [
        "I lost my credit card yesterday",
        "My debit card was stolen on the train",
        "How do I block my card?",
        "Someone took my bank card from my wallet",
        "I can't find my card anywhere",
        "Please freeze my card, it is missing",
        "The cash machine swallowed my card",
        "I want to report a stolen credit card",
    ],
    "weather": [
        "Will it rain tomorrow?",
        "What's the forecast for the weekend?",
        "Is it going to be sunny today?",
        "How cold will it be tonight?",
        "Is there a storm coming this evening?",
        "Do I need an umbrella this afternoon?",
        "What is the temperature outside right now?",
        "Will it snow on Friday?",
    ],
    "cooking": [
        "How long should I boil an egg?",
        "At what temperature do I bake bread?",
        "Give me a recipe for pancakes",
        "How do I cook rice without burning it?",
        "What spices go well with roast chicken?",
        "Can I freeze leftover soup?",
        "How do I make tomato sauce from scratch?",
        "What's a quick vegetarian dinner?",
    ],
}


def split(train_per_label: int = 5) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, test) lists of (text, label): the first ``train_per_label`` of each intent to train on."""
    train = [(t, label) for label, texts in INTENTS.items() for t in texts[:train_per_label]]
    test = [(t, label) for label, texts in INTENTS.items() for t in texts[train_per_label:]]
    return train, test
