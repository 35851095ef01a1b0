"""The built-in task: short review-like texts from a small grammar, judged by a gold reward this project
does not train (VADER sentiment, Hutto & Gilbert 2014, from the `vaderSentiment` package and its bundled
lexicon; no network).

Prompts name an item ("Review of the pasta:"); in-domain prompts come from one template family, the
out-of-distribution set from another ("Q: how was the laptop? A:") with items the in-domain prompts never
use. Responses are one or two clauses: subject, verb, optional negation and intensifier, an adjective of
positive, negative or neutral sentiment, an optional "but" clause, "." or "!". The gold reward of a
response is GOLD_SCALE times VADER's compound score in [-1, 1], so Bradley-Terry labels (Eq. 1) range
from coin flips to near-certain.
"""

import functools

ITEMS = ["the pasta", "the room", "the hotel", "the movie", "the book", "the coffee", "the service", "the park",
         "the concert", "the museum", "the bakery", "the train", "the beach", "the pizza", "the show", "the game"]
OOD_ITEMS = ["the laptop", "the phone", "the jacket", "the bike", "the lamp", "the sofa", "the printer", "the watch"]
ID_TEMPLATES = ["Review of {item}:", "My review of {item}:", "What I thought of {item}:"]
OOD_TEMPLATES = ["Q: how was {item}? A:", "Tell a friend about {item}:"]
SUBJECTS = ["it", "the staff", "the place", "the food", "the price", "the view", "the music", "the ending", "the seat",
            "the wait", "the taste", "the story"]
VERBS = ["was", "is", "seemed", "felt"]
INTENSIFIERS = ["very", "really", "extremely", "quite", "a bit"]
ADJECTIVES = {
    "positive": ["good", "great", "excellent", "lovely", "amazing", "nice", "wonderful", "fantastic", "friendly",
                 "fresh"],
    "negative": ["bad", "terrible", "awful", "poor", "horrible", "boring", "disappointing", "rude", "dirty", "slow"],
    "neutral": ["okay", "average", "small", "new", "old", "quiet", "warm", "plain", "long", "short"],
}
GOLD_SCALE = 4.0


def review_prompt(rng, *, ood=False):
  templates, items = (OOD_TEMPLATES, OOD_ITEMS) if ood else (ID_TEMPLATES, ITEMS)
  return templates[rng.integers(len(templates))].format(item=items[rng.integers(len(items))])


def clause(rng):
  sentiment = list(ADJECTIVES)[rng.integers(3)]
  words = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))]]
  if rng.random() < 0.2:
    words.append("not")
  if rng.random() < 0.4:
    words.append(INTENSIFIERS[rng.integers(len(INTENSIFIERS))])
  words.append(ADJECTIVES[sentiment][rng.integers(len(ADJECTIVES[sentiment]))])
  return " ".join(words)


def review_response(rng):
  """One grammar sample of mixed sentiment, with a leading space (it follows the prompt)."""
  text = clause(rng)
  if rng.random() < 0.35:
    text += " but " + clause(rng)
  return " " + text + ("!" if rng.random() < 0.25 else ".")


def gold_reward(prompts, responses):
  """GOLD_SCALE * VADER compound sentiment of each response (the prompt is not scored)."""
  return [GOLD_SCALE * analyzer().polarity_scores(r)["compound"] for r in responses]


@functools.lru_cache(maxsize=1)
def analyzer():
  """VADER's analyzer (reads its bundled lexicon once)."""
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  return SentimentIntensityAnalyzer()


def corpus(rng, n):
  """n (prompt, response) grammar samples with in-domain prompts: pi0's SFT data."""
  return [(review_prompt(rng), review_response(rng)) for _ in range(n)]


def prompts(rng, n, *, ood=False):
  return [review_prompt(rng, ood=ood) for _ in range(n)]


def tokenizer_corpus(rng, n):
  """Texts covering both prompt families and every word of the grammar, for training the tokenizer."""
  words = " ".join(ITEMS + OOD_ITEMS + SUBJECTS + VERBS + INTENSIFIERS + sum(ADJECTIVES.values(), []) + ["not but"])
  texts = [review_prompt(rng, ood=i % 4 == 0) + review_response(rng) for i in range(n)]
  return texts + [" " + words] * 20
