"""The embedded sample dataset: a seeded, multilingual product catalog with graded (query, item) pairs.

pinrel has to run end to end with no download, so the demo and the tests use this generator.  It builds
items from hand-written vocabularies (16 product categories x 8 colours x 8 materials x 6 styles, with
real translations and grammatical agreement in 11 languages and 7 scripts), queries from the same
vocabulary, and grades from structured attribute match plus seeded noise:

- same category and every attribute the query names (colour, material) matches -> 5
- same category, some named attributes match -> 4; none match -> 3
- a related category (same department, e.g. mug vs teapot) -> 2
- anything else -> 1
- then, with probability `NOISE`, the grade moves one step up or down (rater disagreement).

Relevance is semantic, so cross-lingual pairs (a German query, a Japanese item) are graded the same way.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..checks import check_int
from ..io import atomic_write_text, atomic_write_with, check_output_dir, not_empty, read_json_object
from ..records import make_records, query_key, split_by_query, write_records

__all__ = [
    "CATEGORIES",
    "COLORS",
    "FILES",
    "GRADES",
    "LANGS",
    "MATERIALS",
    "NOISE",
    "SPLIT_FRACTIONS",
    "ensure",
    "generate",
    "phrase",
]

GRADES = 5
NOISE = 0.12
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
FORMAT_VERSION = 1
FILES = (
    "catalog.parquet",
    "queries.parquet",
    "train.parquet",
    "dev.parquet",
    "test.parquet",
    "unlabeled.parquet",
    "manifest.json",
    "README.md",
)

LANGS: tuple[str, ...] = ("en", "de", "fr", "es", "ru", "el", "ar", "hi", "ja", "zh", "th")
# English is the largest market in most catalogs; the rest share the remainder evenly.
_LANG_WEIGHTS = (4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
_CASED = frozenset({"en", "de", "fr", "es", "ru", "el"})
# Grammatical genders of each gendered language, in the order their word forms are listed below.
_GENDERS: dict[str, tuple[str, ...]] = {
    "de": ("m", "f", "n"),
    "fr": ("m", "f"),
    "es": ("m", "f"),
    "ru": ("m", "f", "n"),
    "el": ("m", "f", "n"),
    "ar": ("m", "f"),
    "hi": ("m", "f"),
}

# category -> (department, materials it is made of, noun per language as "noun" or "noun|gender")
CATEGORIES: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "lamp": ("decor", ("wood", "ceramic", "glass", "metal"), {
        "en": "lamp", "de": "Lampe|f", "fr": "lampe|f", "es": "lámpara|f", "ru": "лампа|f",
        "el": "φωτιστικό|n", "ar": "مصباح|m", "hi": "लैंप|m", "ja": "ランプ", "zh": "台灯", "th": "โคมไฟ"}),
    "vase": ("decor", ("ceramic", "glass", "metal"), {
        "en": "vase", "de": "Vase|f", "fr": "vase|m", "es": "jarrón|m", "ru": "ваза|f",
        "el": "βάζο|n", "ar": "مزهرية|f", "hi": "फूलदान|m", "ja": "花瓶", "zh": "花瓶", "th": "แจกัน"}),
    "rug": ("decor", ("wool", "cotton"), {
        "en": "rug", "de": "Teppich|m", "fr": "tapis|m", "es": "alfombra|f", "ru": "ковёр|m",
        "el": "χαλί|n", "ar": "سجادة|f", "hi": "गलीचा|m", "ja": "ラグ", "zh": "地毯", "th": "พรม"}),
    "cushion": ("decor", ("cotton", "linen", "wool"), {
        "en": "cushion", "de": "Kissen|n", "fr": "coussin|m", "es": "cojín|m", "ru": "подушка|f",
        "el": "μαξιλάρι|n", "ar": "وسادة|f", "hi": "कुशन|m", "ja": "クッション", "zh": "靠垫",
        "th": "หมอนอิง"}),
    "plant_pot": ("decor", ("ceramic", "metal", "wood"), {
        "en": "plant pot", "de": "Blumentopf|m", "fr": "pot de fleurs|m", "es": "maceta|f",
        "ru": "цветочный горшок|m", "el": "γλάστρα|f", "ar": "أصيص|m", "hi": "गमला|m", "ja": "植木鉢",
        "zh": "花盆", "th": "กระถางต้นไม้"}),
    "sofa": ("furniture", ("leather", "linen", "cotton"), {
        "en": "sofa", "de": "Sofa|n", "fr": "canapé|m", "es": "sofá|m", "ru": "диван|m",
        "el": "καναπές|m", "ar": "أريكة|f", "hi": "सोफ़ा|m", "ja": "ソファ", "zh": "沙发", "th": "โซฟา"}),
    "chair": ("furniture", ("wood", "metal", "leather"), {
        "en": "chair", "de": "Stuhl|m", "fr": "chaise|f", "es": "silla|f", "ru": "стул|m",
        "el": "καρέκλα|f", "ar": "كرسي|m", "hi": "कुर्सी|f", "ja": "椅子", "zh": "椅子", "th": "เก้าอี้"}),
    "table": ("furniture", ("wood", "glass", "metal"), {
        "en": "table", "de": "Tisch|m", "fr": "table|f", "es": "mesa|f", "ru": "стол|m",
        "el": "τραπέζι|n", "ar": "طاولة|f", "hi": "मेज़|f", "ja": "テーブル", "zh": "桌子", "th": "โต๊ะ"}),
    "mug": ("kitchen", ("ceramic", "glass", "metal"), {
        "en": "mug", "de": "Becher|m", "fr": "tasse|f", "es": "taza|f", "ru": "кружка|f",
        "el": "κούπα|f", "ar": "كوب|m", "hi": "मग|m", "ja": "マグカップ", "zh": "马克杯", "th": "แก้วมัค"}),
    "teapot": ("kitchen", ("ceramic", "glass", "metal"), {
        "en": "teapot", "de": "Teekanne|f", "fr": "théière|f", "es": "tetera|f", "ru": "чайник|m",
        "el": "τσαγιέρα|f", "ar": "إبريق شاي|m", "hi": "चायदानी|f", "ja": "ティーポット", "zh": "茶壶",
        "th": "กาน้ำชา"}),
    "plate": ("kitchen", ("ceramic", "glass", "wood"), {
        "en": "plate", "de": "Teller|m", "fr": "assiette|f", "es": "plato|m", "ru": "тарелка|f",
        "el": "πιάτο|n", "ar": "طبق|m", "hi": "प्लेट|f", "ja": "皿", "zh": "盘子", "th": "จาน"}),
    "dress": ("fashion", ("cotton", "linen", "wool"), {
        "en": "dress", "de": "Kleid|n", "fr": "robe|f", "es": "vestido|m", "ru": "платье|n",
        "el": "φόρεμα|n", "ar": "فستان|m", "hi": "ड्रेस|f", "ja": "ワンピース", "zh": "连衣裙",
        "th": "ชุดเดรส"}),
    "jacket": ("fashion", ("leather", "cotton", "wool"), {
        "en": "jacket", "de": "Jacke|f", "fr": "veste|f", "es": "chaqueta|f", "ru": "куртка|f",
        "el": "μπουφάν|n", "ar": "سترة|f", "hi": "जैकेट|f", "ja": "ジャケット", "zh": "夹克", "th": "แจ็คเก็ต"}),
    "scarf": ("fashion", ("wool", "cotton", "linen"), {
        "en": "scarf", "de": "Schal|m", "fr": "écharpe|f", "es": "bufanda|f", "ru": "шарф|m",
        "el": "κασκόλ|n", "ar": "وشاح|m", "hi": "स्कार्फ़|m", "ja": "マフラー", "zh": "围巾", "th": "ผ้าพันคอ"}),
    "backpack": ("bags", ("leather", "cotton"), {
        "en": "backpack", "de": "Rucksack|m", "fr": "sac à dos|m", "es": "mochila|f", "ru": "рюкзак|m",
        "el": "σακίδιο πλάτης|n", "ar": "حقيبة ظهر|f", "hi": "बैकपैक|m", "ja": "リュックサック",
        "zh": "双肩包", "th": "กระเป๋าเป้"}),
    "handbag": ("bags", ("leather", "cotton"), {
        "en": "handbag", "de": "Handtasche|f", "fr": "sac à main|m", "es": "bolso|m", "ru": "сумка|f",
        "el": "τσάντα|f", "ar": "حقيبة يد|f", "hi": "हैंडबैग|m", "ja": "ハンドバッグ", "zh": "手提包",
        "th": "กระเป๋าถือ"}),
}  # fmt: skip

# colour -> language -> forms ("m|f|n" in the order of _GENDERS; one form for ungendered languages)
COLORS: dict[str, dict[str, str]] = {
    "red": {"en": "red", "de": "roter|rote|rotes", "fr": "rouge|rouge", "es": "rojo|roja",
            "ru": "красный|красная|красное", "el": "κόκκινος|κόκκινη|κόκκινο", "ar": "أحمر|حمراء",
            "hi": "लाल|लाल", "ja": "赤い", "zh": "红色", "th": "สีแดง"},
    "blue": {"en": "blue", "de": "blauer|blaue|blaues", "fr": "bleu|bleue", "es": "azul|azul",
             "ru": "синий|синяя|синее", "el": "μπλε|μπλε|μπλε", "ar": "أزرق|زرقاء",
             "hi": "नीला|नीली", "ja": "青い", "zh": "蓝色", "th": "สีน้ำเงิน"},
    "green": {"en": "green", "de": "grüner|grüne|grünes", "fr": "vert|verte", "es": "verde|verde",
              "ru": "зелёный|зелёная|зелёное", "el": "πράσινος|πράσινη|πράσινο", "ar": "أخضر|خضراء",
              "hi": "हरा|हरी", "ja": "緑の", "zh": "绿色", "th": "สีเขียว"},
    "black": {"en": "black", "de": "schwarzer|schwarze|schwarzes", "fr": "noir|noire", "es": "negro|negra",
              "ru": "чёрный|чёрная|чёрное", "el": "μαύρος|μαύρη|μαύρο", "ar": "أسود|سوداء",
              "hi": "काला|काली", "ja": "黒い", "zh": "黑色", "th": "สีดำ"},
    "white": {"en": "white", "de": "weißer|weiße|weißes", "fr": "blanc|blanche", "es": "blanco|blanca",
              "ru": "белый|белая|белое", "el": "λευκός|λευκή|λευκό", "ar": "أبيض|بيضاء",
              "hi": "सफ़ेद|सफ़ेद", "ja": "白い", "zh": "白色", "th": "สีขาว"},
    "yellow": {"en": "yellow", "de": "gelber|gelbe|gelbes", "fr": "jaune|jaune", "es": "amarillo|amarilla",
               "ru": "жёлтый|жёлтая|жёлтое", "el": "κίτρινος|κίτρινη|κίτρινο", "ar": "أصفر|صفراء",
               "hi": "पीला|पीली", "ja": "黄色い", "zh": "黄色", "th": "สีเหลือง"},
    "grey": {"en": "grey", "de": "grauer|graue|graues", "fr": "gris|grise", "es": "gris|gris",
             "ru": "серый|серая|серое", "el": "γκρι|γκρι|γκρι", "ar": "رمادي|رمادية",
             "hi": "स्लेटी|स्लेटी", "ja": "グレーの", "zh": "灰色", "th": "สีเทา"},
    "pink": {"en": "pink", "de": "rosa|rosa|rosa", "fr": "rose|rose", "es": "rosa|rosa",
             "ru": "розовый|розовая|розовое", "el": "ροζ|ροζ|ροζ", "ar": "وردي|وردية",
             "hi": "गुलाबी|गुलाबी", "ja": "ピンクの", "zh": "粉色", "th": "สีชมพู"},
}  # fmt: skip

# material -> language -> the phrase piece ("made of X" where the language says it that way; Hindi's
# postposition agrees with the noun: "m|f")
MATERIALS: dict[str, dict[str, str]] = {
    "wood": {"en": "wooden", "de": "aus Holz", "fr": "en bois", "es": "de madera", "ru": "из дерева",
             "el": "από ξύλο", "ar": "من الخشب", "hi": "लकड़ी का|लकड़ी की", "ja": "木製", "zh": "木质",
             "th": "ไม้"},
    "ceramic": {"en": "ceramic", "de": "aus Keramik", "fr": "en céramique", "es": "de cerámica",
                "ru": "из керамики", "el": "από κεραμικό", "ar": "من السيراميك", "hi": "सिरेमिक का|सिरेमिक की",
                "ja": "セラミック", "zh": "陶瓷", "th": "เซรามิก"},
    "cotton": {"en": "cotton", "de": "aus Baumwolle", "fr": "en coton", "es": "de algodón", "ru": "из хлопка",
               "el": "από βαμβάκι", "ar": "من القطن", "hi": "सूती|सूती", "ja": "コットン", "zh": "纯棉",
               "th": "ผ้าฝ้าย"},
    "leather": {"en": "leather", "de": "aus Leder", "fr": "en cuir", "es": "de cuero", "ru": "из кожи",
                "el": "από δέρμα", "ar": "من الجلد", "hi": "चमड़े का|चमड़े की", "ja": "レザー", "zh": "真皮",
                "th": "หนัง"},
    "glass": {"en": "glass", "de": "aus Glas", "fr": "en verre", "es": "de vidrio", "ru": "из стекла",
              "el": "από γυαλί", "ar": "من الزجاج", "hi": "काँच का|काँच की", "ja": "ガラス", "zh": "玻璃",
              "th": "แก้ว"},
    "metal": {"en": "metal", "de": "aus Metall", "fr": "en métal", "es": "de metal", "ru": "из металла",
              "el": "από μέταλλο", "ar": "من المعدن", "hi": "धातु का|धातु की", "ja": "金属製", "zh": "金属",
              "th": "โลหะ"},
    "linen": {"en": "linen", "de": "aus Leinen", "fr": "en lin", "es": "de lino", "ru": "из льна",
              "el": "από λινό", "ar": "من الكتان", "hi": "लिनन का|लिनन की", "ja": "リネン", "zh": "亚麻",
              "th": "ผ้าลินิน"},
    "wool": {"en": "wool", "de": "aus Wolle", "fr": "en laine", "es": "de lana", "ru": "из шерсти",
             "el": "από μαλλί", "ar": "من الصوف", "hi": "ऊनी|ऊनी", "ja": "ウール", "zh": "羊毛",
             "th": "ขนสัตว์"},
}  # fmt: skip

# style -> language -> a stand-alone phrase (no agreement needed), plus the English adjective for captions
_STYLES: dict[str, dict[str, str]] = {
    "modern": {"en": "modern style", "de": "moderner Stil", "fr": "style moderne", "es": "estilo moderno",
               "ru": "современный стиль", "el": "μοντέρνο στιλ", "ar": "طراز عصري", "hi": "आधुनिक शैली",
               "ja": "モダンスタイル", "zh": "现代风格", "th": "สไตล์โมเดิร์น", "adj": "modern"},
    "vintage": {"en": "vintage style", "de": "Vintage-Stil", "fr": "style vintage", "es": "estilo vintage",
                "ru": "винтажный стиль", "el": "ρετρό στιλ", "ar": "طراز عتيق", "hi": "विंटेज शैली",
                "ja": "ヴィンテージスタイル", "zh": "复古风格", "th": "สไตล์วินเทจ", "adj": "vintage"},
    "minimalist": {"en": "minimalist style", "de": "minimalistischer Stil", "fr": "style minimaliste",
                   "es": "estilo minimalista", "ru": "минималистичный стиль", "el": "μινιμαλιστικό στιλ",
                   "ar": "طراز بسيط", "hi": "मिनिमलिस्ट शैली", "ja": "ミニマルスタイル", "zh": "极简风格",
                   "th": "สไตล์มินิมอล", "adj": "minimalist"},
    "rustic": {"en": "rustic style", "de": "rustikaler Stil", "fr": "style rustique", "es": "estilo rústico",
               "ru": "деревенский стиль", "el": "ρουστίκ στιλ", "ar": "طراز ريفي", "hi": "देहाती शैली",
               "ja": "カントリースタイル", "zh": "乡村风格", "th": "สไตล์ชนบท", "adj": "rustic"},
    "scandinavian": {"en": "Scandinavian style", "de": "skandinavischer Stil", "fr": "style scandinave",
                     "es": "estilo escandinavo", "ru": "скандинавский стиль", "el": "σκανδιναβικό στιλ",
                     "ar": "طراز إسكندنافي", "hi": "स्कैंडिनेवियाई शैली", "ja": "北欧スタイル", "zh": "北欧风格",
                     "th": "สไตล์สแกนดิเนเวียน", "adj": "Scandinavian"},
    "boho": {"en": "boho style", "de": "Boho-Stil", "fr": "style bohème", "es": "estilo bohemio",
             "ru": "стиль бохо", "el": "μποέμ στιλ", "ar": "طراز بوهيمي", "hi": "बोहो शैली",
             "ja": "ボヘミアンスタイル", "zh": "波西米亚风格", "th": "สไตล์โบฮีเมียน", "adj": "bohemian"},
}  # fmt: skip

# Selling points, in order: easy to clean, handmade, free shipping, a gift.
_SENTENCES: dict[str, tuple[str, str, str, str]] = {
    "en": ("Easy to clean", "Carefully handmade", "Free shipping on all orders", "A perfect gift"),
    "de": ("Leicht zu reinigen", "Sorgfältig von Hand gefertigt", "Kostenloser Versand für alle Bestellungen",
           "Ein perfektes Geschenk"),
    "fr": ("Facile à nettoyer", "Fabriqué à la main avec soin",
           "Livraison gratuite pour toutes les commandes", "Un cadeau parfait"),
    "es": ("Fácil de limpiar", "Hecho a mano con esmero", "Envío gratis en todos los pedidos",
           "Un regalo perfecto"),
    "ru": ("Легко чистить", "Ручная работа", "Бесплатная доставка всех заказов", "Отличный подарок"),
    "el": ("Καθαρίζεται εύκολα", "Χειροποίητο με φροντίδα", "Δωρεάν αποστολή για όλες τις παραγγελίες",
           "Ιδανικό δώρο"),
    "ar": ("سهل التنظيف", "مصنوع يدويًا بعناية", "شحن مجاني لجميع الطلبات", "هدية مثالية"),
    "hi": ("साफ़ करना आसान", "हाथ से सावधानी से बना", "सभी ऑर्डर पर मुफ़्त डिलीवरी", "उपहार के लिए बिल्कुल सही"),
    "ja": ("お手入れが簡単です", "丁寧な手作りです", "全品送料無料", "ギフトに最適です"),
    "zh": ("易于清洁", "精心手工制作", "全场包邮", "送礼佳品"),
    "th": ("ทำความสะอาดง่าย", "งานทำมือประณีต", "จัดส่งฟรีทุกคำสั่งซื้อ", "เหมาะเป็นของขวัญ"),
}  # fmt: skip

# Board titles, in order: kitchen ideas, tea time, living room decor, home office, cozy home, bedroom
# inspiration, autumn outfits, street style, travel essentials, accessories, gift ideas, wishlist.
_BOARD_KEYS = ("kitchen", "tea", "living", "office", "cozy", "bedroom", "autumn", "street", "travel",
               "accessories", "gifts", "wishlist")  # fmt: skip
_BOARDS: dict[str, tuple[str, ...]] = {
    "en": ("kitchen ideas", "tea time", "living room decor", "home office", "cozy home",
           "bedroom inspiration", "autumn outfits", "street style", "travel essentials", "accessories",
           "gift ideas", "wishlist"),
    "de": ("Küchenideen", "Teezeit", "Wohnzimmer-Deko", "Homeoffice", "Gemütliches Zuhause",
           "Schlafzimmer-Inspiration", "Herbst-Outfits", "Streetstyle", "Reise-Essentials", "Accessoires",
           "Geschenkideen", "Wunschliste"),
    "fr": ("idées cuisine", "l'heure du thé", "déco salon", "bureau à domicile", "maison cosy",
           "inspiration chambre", "tenues d'automne", "street style", "essentiels de voyage", "accessoires",
           "idées cadeaux", "liste d'envies"),
    "es": ("ideas para la cocina", "hora del té", "decoración del salón", "oficina en casa", "hogar acogedor",
           "inspiración para el dormitorio", "looks de otoño", "estilo urbano", "esenciales de viaje",
           "accesorios", "ideas para regalar", "lista de deseos"),
    "ru": ("идеи для кухни", "время чая", "декор гостиной", "домашний офис", "уютный дом", "идеи для спальни",
           "осенние образы", "уличный стиль", "всё для путешествий", "аксессуары", "идеи подарков",
           "список желаний"),
    "el": ("ιδέες για την κουζίνα", "ώρα για τσάι", "διακόσμηση σαλονιού", "γραφείο στο σπίτι", "ζεστό σπίτι",
           "έμπνευση για την κρεβατοκάμαρα", "φθινοπωρινά σύνολα", "street style", "απαραίτητα ταξιδιού",
           "αξεσουάρ", "ιδέες για δώρα", "λίστα επιθυμιών"),
    "ar": ("أفكار للمطبخ", "وقت الشاي", "ديكور غرفة المعيشة", "مكتب منزلي", "منزل دافئ",
           "إلهام لغرفة النوم", "إطلالات الخريف", "أزياء الشارع", "مستلزمات السفر", "إكسسوارات",
           "أفكار للهدايا", "قائمة الأمنيات"),
    "hi": ("रसोई के आइडिया", "चाय का समय", "लिविंग रूम की सजावट", "होम ऑफ़िस", "आरामदायक घर",
           "बेडरूम के लिए प्रेरणा", "पतझड़ के आउटफ़िट", "स्ट्रीट स्टाइल", "यात्रा की ज़रूरी चीज़ें", "एक्सेसरीज़",
           "उपहार के आइडिया", "विशलिस्ट"),
    "ja": ("キッチンのアイデア", "ティータイム", "リビングのインテリア", "ホームオフィス", "居心地のいい家",
           "寝室のインスピレーション", "秋のコーデ", "ストリートスタイル", "旅行の必需品", "アクセサリー",
           "ギフトのアイデア", "ほしいものリスト"),
    "zh": ("厨房灵感", "下午茶时光", "客厅装饰", "居家办公", "温馨的家", "卧室灵感", "秋季穿搭", "街头风格",
           "旅行必备", "配饰", "礼物创意", "心愿单"),
    "th": ("ไอเดียห้องครัว", "เวลาน้ำชา", "ตกแต่งห้องนั่งเล่น", "โฮมออฟฟิศ", "บ้านอบอุ่น", "ไอเดียห้องนอน",
           "แฟชั่นฤดูใบไม้ร่วง", "สตรีทสไตล์", "ของจำเป็นสำหรับการเดินทาง", "เครื่องประดับ", "ไอเดียของขวัญ",
           "รายการสิ่งที่อยากได้"),
}  # fmt: skip
_DEPARTMENT_BOARDS: dict[str, tuple[str, ...]] = {
    "kitchen": ("kitchen", "tea"),
    "furniture": ("living", "office"),
    "decor": ("cozy", "bedroom"),
    "fashion": ("autumn", "street"),
    "bags": ("travel", "accessories"),
}
_GENERIC_BOARDS = ("gifts", "wishlist")

# Image captions come from an English captioning model, as they would in a real pipeline.
_SCENES: dict[str, tuple[str, ...]] = {
    "kitchen": ("on a wooden table", "on a kitchen counter", "next to a cup of coffee"),
    "furniture": ("in a bright living room", "against a white wall", "in a sunny room with plants"),
    "decor": ("on a shelf", "in a cozy bedroom", "by a window"),
    "fashion": ("worn by a woman on a city street", "on a hanger", "in a flat lay with accessories"),
    "bags": ("on a white background", "carried by a person in the city", "on a cafe table"),
}
_BRANDS = ("Nordhus", "Lumo", "Casa Verde", "Kiraku", "Atelier Sol", "Urbanwood", "Mira Home", "Tessa & Co",
           "Hanami", "Oro Living", "Bergfeld", "Luna Craft")  # fmt: skip


@dataclass(frozen=True)
class _Item:
    category: str
    color: str
    material: str
    style: str
    lang: str
    brand: str


@dataclass(frozen=True)
class _Query:
    category: str
    color: str | None
    material: str | None
    lang: str


# ------------------------------------------------------------------------------------------ language


def _form(forms: str, lang: str, gender: str | None) -> str:
    options = forms.split("|")
    if gender is None or len(options) == 1:
        return options[0]
    return options[_GENDERS[lang].index(gender)]


def phrase(lang: str, category: str, color: str | None = None, material: str | None = None) -> str:
    """A product noun phrase with optional colour and material, in the language's own word order and
    agreement (e.g. de "roter Stuhl aus Holz", fr "chaise rouge en bois", hi "लकड़ी की लाल कुर्सी")."""
    noun, _, gender = CATEGORIES[category][2][lang].partition("|")
    g = gender or None
    c = _form(COLORS[color][lang], lang, g) if color else ""
    m = _form(MATERIALS[material][lang], lang, g) if material else ""
    if lang == "en":
        parts = [c, m, noun]
    elif lang in ("de", "ru", "el"):  # colour before the noun, "made of" after
        parts = [c, noun, m]
    elif lang in ("fr", "es", "ar"):  # colour after the noun, then "made of"
        parts = [noun, c, m]
    elif lang == "hi":  # "लकड़ी की" + colour + noun
        parts = [m, c, noun]
    elif lang in ("ja", "zh"):  # modifiers stack before the noun without spaces
        return c + m + noun
    else:  # th: noun, material, colour ("สีแดง"), no spaces
        return noun + m + c
    return " ".join(p for p in parts if p)


def _capitalize(lang: str, text: str, title: bool = False) -> str:
    if lang not in _CASED:
        return text
    if title and lang == "en":
        return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
    return text[:1].upper() + text[1:]


def _lower(lang: str, text: str) -> str:
    # People type queries in lower case where the script has case.
    return text.lower() if lang in _CASED else text


def _sentences(lang: str, parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if lang in ("ja", "zh"):
        return "".join(p + "。" for p in parts)
    if lang == "th":  # Thai separates sentences with a space and no full stop
        return " ".join(parts)
    if lang == "hi":
        return " ".join(p + "।" for p in parts)
    return " ".join(p + "." for p in parts)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# -------------------------------------------------------------------------------------------- catalog


def _draw_items(rng: random.Random, n: int) -> list[_Item]:
    categories = list(CATEGORIES)
    colors = list(COLORS)
    styles = list(_STYLES)
    items = []
    for _ in range(n):
        cat = rng.choice(categories)
        items.append(
            _Item(
                category=cat,
                color=rng.choice(colors),
                material=rng.choice(CATEGORIES[cat][1]),
                style=rng.choice(styles),
                lang=rng.choices(LANGS, weights=_LANG_WEIGHTS)[0],
                brand=rng.choice(_BRANDS),
            )
        )
    return items


def _item_fields(rng: random.Random, it: _Item) -> dict[str, Any]:
    lang, dept = it.lang, CATEGORIES[it.category][0]
    full = phrase(lang, it.category, it.color, it.material)
    # Titles are not always complete: the colour or material may only be in the description or image,
    # which is what makes the other fields worth reading.
    shown_color = it.color if rng.random() < 0.85 else None
    shown_material = it.material if rng.random() < 0.7 else None
    title = _capitalize(lang, phrase(lang, it.category, shown_color, shown_material), title=True)
    branded = f"{it.brand} {title}"
    if rng.random() < 0.5:
        title = branded
    selling = _SENTENCES[lang]
    description = _sentences(
        lang, [_capitalize(lang, full), _capitalize(lang, _STYLES[it.style][lang]), *rng.sample(selling, 2)]
    )
    noun_en = CATEGORIES[it.category][2]["en"]
    color_en, material_en = COLORS[it.color]["en"], MATERIALS[it.material]["en"]
    scenes = _SCENES[dept]
    captions = [f"{_article(color_en)} {color_en} {material_en} {noun_en} {rng.choice(scenes)}"]
    if rng.random() < 0.5:
        adj = _STYLES[it.style]["adj"]
        captions.append(f"{_article(adj)} {adj} {noun_en} {rng.choice(scenes)}")
    board_keys = [*_DEPARTMENT_BOARDS[dept], *_GENERIC_BOARDS]
    boards = [_BOARDS[lang][_BOARD_KEYS.index(k)] for k in rng.sample(board_keys, rng.randint(1, 3))]
    engaged = [
        phrase(lang, it.category),
        phrase(lang, it.category, it.color),
        phrase(lang, it.category, None, it.material),
        full,
    ]
    queries = [_lower(lang, q) for q in rng.sample(engaged, rng.randint(1, 3))]
    return {
        "title": title,
        "description": description,
        "captions": captions,
        "boards": boards,
        "queries": queries,
        "link_title": f"{title} | {it.brand}" if title != branded else f"{title} | {it.brand} Store",
        "link_description": _sentences(lang, [_capitalize(lang, full), selling[2]]),
        "lang": lang,
    }


# -------------------------------------------------------------------------------------- queries, pairs


def _query_text(q: _Query) -> str:
    return _lower(q.lang, phrase(q.lang, q.category, q.color, q.material))


def _draw_queries(rng: random.Random, n: int) -> list[_Query]:
    categories = list(CATEGORIES)
    colors = list(COLORS)
    # Distinct by text, not by structure: "sofa" is the same query whether typed in English or German,
    # and ja/zh share words such as 椅子; two ids for one text would let it straddle splits.
    seen: set[str] = set()
    out: list[_Query] = []
    for _ in range(200 * n + 1000):
        if len(out) == n:
            break
        cat = rng.choice(categories)
        q = _Query(
            category=cat,
            color=rng.choice(colors) if rng.random() < 0.5 else None,
            material=rng.choice(CATEGORIES[cat][1]) if rng.random() < 0.3 else None,
            lang=rng.choices(LANGS, weights=_LANG_WEIGHTS)[0],
        )
        key = query_key(_query_text(q))
        if key not in seen:
            seen.add(key)
            out.append(q)
    if len(out) < n:
        raise ValueError(f"cannot draw {n} distinct queries from the sample vocabulary")
    return out


def _true_grade(q: _Query, it: _Item) -> int:
    if q.category == it.category:
        asked = [(want, have) for want, have in ((q.color, it.color), (q.material, it.material)) if want]
        matched = sum(want == have for want, have in asked)
        if matched == len(asked):
            return 5
        return 4 if matched else 3
    if CATEGORIES[q.category][0] == CATEGORIES[it.category][0]:
        return 2
    return 1


def _noisy(rng: random.Random, grade: int) -> int:
    if rng.random() < NOISE:
        grade += rng.choice((-1, 1))
    return min(GRADES, max(1, grade))


class _Pools:
    """Item indices by category, colour, department and language, for drawing realistic candidates."""

    def __init__(self, items: Sequence[_Item]) -> None:
        self.all = list(range(len(items)))
        self.index: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, it in enumerate(items):
            dept = CATEGORIES[it.category][0]
            for key in (
                ("cat", it.category),
                ("cat", it.category, it.lang),
                ("color", it.category, it.color),
                ("color", it.category, it.color, it.lang),
                ("related", dept),
                ("related", dept, it.lang),
                ("lang", it.lang),
            ):
                self.index[key].append(i)

    def candidate(self, rng: random.Random, q: _Query) -> int:
        # Candidates look like a retrieval stage's output: mostly on-topic, some near misses, some noise;
        # mostly in the query's language, with some cross-lingual items.
        r = rng.random()
        key: tuple[str, ...]
        if r < 0.45:
            by_color = q.color is not None and rng.random() < 0.5
            key = ("color", q.category, q.color or "") if by_color else ("cat", q.category)
        elif r < 0.7:  # the department: near misses such as a teapot for "mug"
            key = ("related", CATEGORIES[q.category][0])
        else:
            key = ("lang",)
        same_lang = rng.random() < 0.8
        pool = self.index.get((*key, q.lang)) if same_lang else None
        if not pool:
            pool = self.all if key == ("lang",) else self.index.get(key)
        if not pool:
            pool = self.all
        return rng.choice(pool)


def _pairs(
    rng: random.Random,
    queries: Sequence[int],
    all_queries: Sequence[_Query],
    pools: _Pools,
    total: int,
) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    base, extra = divmod(total, len(queries)) if queries else (0, 0)
    for k, qi in enumerate(queries):
        want = base + (1 if k < extra else 0)
        chosen: list[int] = []
        taken: set[int] = set()
        for _ in range(20 * want + 20):
            if len(chosen) == want:
                break
            ii = pools.candidate(rng, all_queries[qi])
            if ii not in taken:
                taken.add(ii)
                chosen.append(ii)
        pairs.extend((qi, ii) for ii in chosen)
    return pairs


def _pair_records(
    pairs: Sequence[tuple[int, int]],
    query_texts: Sequence[str],
    query_ids: Sequence[str],
    query_langs: Sequence[str],
    catalog: pa.Table,
    labels: Sequence[int | None],
) -> pa.Table:
    qi = [q for q, _ in pairs]
    rows = catalog.take(pa.array([i for _, i in pairs], pa.int64()))
    data: dict[str, Any] = {name: rows.column(name) for name in rows.column_names if name != "lang"}
    data.update(
        query=[query_texts[q] for q in qi],
        query_id=[query_ids[q] for q in qi],
        # The pair's language is the user's, i.e. the query's; the item's own is in the catalog.
        lang=[query_langs[q] for q in qi],
        label=pa.array(labels, pa.int32()),
    )
    return make_records(data, grades=GRADES, source="sample")


# ------------------------------------------------------------------------------------------- generate


# Bounds that keep a typo from running for hours: a sample is for demos, tests and smoke runs.
MAX_ITEMS = MAX_QUERIES = 1_000_000
MAX_PAIRS = 10_000_000


def _check_sizes(n_items: int, n_queries: int, n_labeled: int, n_unlabeled: int) -> None:
    check_int(n_items, "n_items", 1, MAX_ITEMS)
    check_int(n_queries, "n_queries", len(SPLIT_FRACTIONS), MAX_QUERIES)
    check_int(n_labeled, "n_labeled", n_queries, MAX_PAIRS)
    check_int(n_unlabeled, "n_unlabeled", 0, MAX_PAIRS)
    # Pairs are distinct, so a query has at most one per item.
    if n_labeled > n_queries * n_items:
        raise ValueError(
            f"n_labeled: {n_queries} queries x {n_items} items make at most {n_queries * n_items} distinct "
            f"pairs, fewer than {n_labeled}"
        )


def _check_out(out: Path) -> None:
    """The sample goes into a new or empty directory, or replaces an earlier sample; its file names
    (train.parquet, README.md, ...) are common ones, and a user's files of those names must survive."""

    def problem(entries: list[str]) -> str | None:
        manifest = read_json_object(out / "manifest.json") or {}
        return None if manifest.get("name") == "pinrel-sample" else not_empty(entries, "pinrel sample")

    check_output_dir(out, "out", "pinrel sample", problem)


def generate(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_items: int = 2000,
    n_queries: int = 300,
    n_labeled: int = 3000,
    n_unlabeled: int = 30000,
) -> dict[str, Any]:
    """Write the sample dataset into `out_dir` and return its manifest (also written as manifest.json).

    Files: catalog.parquet (items), queries.parquet (query_id, query, lang, split), train/dev/test.parquet
    (graded pairs, K=5, query-disjoint), unlabeled.parquet (pairs with null labels, drawn for train
    queries and for further queries never graded, so nothing about dev/test queries leaks into them) and
    README.md.  Same seed and sizes, same bytes.
    """
    _check_sizes(n_items, n_queries, n_labeled, n_unlabeled)
    out = Path(out_dir)
    _check_out(out)
    rng = random.Random(seed)

    items = _draw_items(rng, n_items)
    item_rows = [_item_fields(rng, it) for it in items]
    item_ids = [f"item-{i:05d}" for i in range(n_items)]
    catalog = pa.table(
        {"item_id": item_ids, **{k: [row[k] for row in item_rows] for k in item_rows[0]}},
        schema=pa.schema(
            [
                ("item_id", pa.string()),
                ("title", pa.string()),
                ("description", pa.string()),
                ("captions", pa.list_(pa.string())),
                ("boards", pa.list_(pa.string())),
                ("queries", pa.list_(pa.string())),
                ("link_title", pa.string()),
                ("link_description", pa.string()),
                ("lang", pa.string()),
            ]
        ),
    )

    # Graded queries first, then as many fresh ones that only ever get unlabeled pairs.
    queries = _draw_queries(rng, 2 * n_queries)
    texts = [_query_text(q) for q in queries]
    qids = [f"q-{j:05d}" for j in range(len(queries))]
    qlangs = [q.lang for q in queries]
    pools = _Pools(items)

    labeled_pairs = _pairs(rng, range(n_queries), queries, pools, n_labeled)
    labels = [_noisy(rng, _true_grade(queries[q], items[i])) for q, i in labeled_pairs]
    labeled = _pair_records(labeled_pairs, texts, qids, qlangs, catalog, labels)
    train, dev, test = split_by_query(labeled, SPLIT_FRACTIONS, seed=seed)

    split_of = {
        qid: name
        for name, t in (("train", train), ("dev", dev), ("test", test))
        for qid in t.column("query_id").to_pylist()
    }
    unlabeled_queries = [j for j in range(n_queries) if split_of.get(qids[j]) == "train"]
    unlabeled_queries += list(range(n_queries, 2 * n_queries))
    for j in range(n_queries, 2 * n_queries):
        split_of[qids[j]] = "unlabeled"
    unlabeled_pairs = _pairs(rng, unlabeled_queries, queries, pools, n_unlabeled)
    unlabeled = _pair_records(unlabeled_pairs, texts, qids, qlangs, catalog, [None] * len(unlabeled_pairs))

    query_table = pa.table(
        {
            "query_id": qids,
            "query": texts,
            "lang": qlangs,
            # A graded query whose pairs all collapsed into duplicates has no split; none in practice.
            "split": [split_of.get(q, "unused") for q in qids],
        }
    )

    tables = {"train": train, "dev": dev, "test": test, "unlabeled": unlabeled}
    manifest = _manifest(seed, n_items, n_queries, n_labeled, n_unlabeled, catalog, query_table, tables)
    atomic_write_with(out / "catalog.parquet", lambda p: pq.write_table(catalog, p))
    atomic_write_with(out / "queries.parquet", lambda p: pq.write_table(query_table, p))
    for name, table in tables.items():
        write_records(table, out / f"{name}.parquet")
    atomic_write_text(out / "README.md", _readme(manifest))
    # The manifest goes last: its presence means the folder is complete (see `ensure`).
    atomic_write_text(out / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return manifest


def _manifest(
    seed: int,
    n_items: int,
    n_queries: int,
    n_labeled: int,
    n_unlabeled: int,
    catalog: pa.Table,
    query_table: pa.Table,
    tables: dict[str, pa.Table],
) -> dict[str, Any]:
    def counts(t: pa.Table) -> dict[str, int]:
        c = Counter(v for v in t.column("label").to_pylist() if v is not None)
        return {str(g): c.get(g, 0) for g in range(1, GRADES + 1)}

    files: dict[str, dict[str, Any]] = {
        "catalog.parquet": {"rows": catalog.num_rows, "what": "items: item_id and every item field, lang"},
        "queries.parquet": {"rows": query_table.num_rows, "what": "query_id, query, lang, split"},
    }
    for name, t in tables.items():
        what = "unlabeled pairs (label null)" if name == "unlabeled" else f"graded pairs, K={GRADES}"
        entry: dict[str, Any] = {
            "rows": t.num_rows,
            "queries": len(set(t.column("query_id").to_pylist())),
            "what": what,
        }
        if name != "unlabeled":
            entry["label_counts"] = counts(t)
        files[f"{name}.parquet"] = entry
    return {
        "name": "pinrel-sample",
        "format_version": FORMAT_VERSION,
        "generator": "pinrel.datasets.sample",
        "params": {
            "seed": seed,
            "n_items": n_items,
            "n_queries": n_queries,
            "n_labeled": n_labeled,
            "n_unlabeled": n_unlabeled,
        },
        "grades": GRADES,
        "noise": NOISE,
        "split_fractions": list(SPLIT_FRACTIONS),
        "languages": list(LANGS),
        "scripts": ["Latin", "Cyrillic", "Greek", "Arabic", "Devanagari", "Han", "Kana", "Thai"],
        "files": files,
    }


def _readme(manifest: dict[str, Any]) -> str:
    files = manifest["files"]
    lines = [
        "# pinrel sample dataset",
        "",
        "Synthetic and multilingual, generated by `pinrel.datasets.sample.generate` "
        f"(seed {manifest['params']['seed']}); regenerate rather than edit.",
        "",
        f"A product catalog in {len(manifest['languages'])} languages ({', '.join(manifest['languages'])}) "
        f"and {len(manifest['scripts'])} scripts, built from hand-written vocabularies: "
        f"{len(CATEGORIES)} categories in 5 departments, {len(COLORS)} colours, {len(MATERIALS)} materials, "
        f"{len(_STYLES)} styles. Captions are English, as an image captioner would write them; titles, "
        "descriptions, boards, engaged queries and link texts are in the item's language.",
        "",
        "| file | rows | contents |",
        "|---|---|---|",
    ]
    for name, entry in files.items():
        lines.append(f"| {name} | {entry['rows']} | {entry['what']} |")
    lines += [
        "",
        f"## Grades (K={manifest['grades']})",
        "",
        "- 5: same category, and every colour/material the query names matches",
        "- 4: same category, some named attributes match; 3: same category, none match",
        "- 2: related category (same department); 1: unrelated",
        f"- then, with probability {manifest['noise']}, one step up or down (rater noise)",
        "",
        "Splits are by query (no query in two of train/dev/test). Pair `lang` is the query's language; about "
        "a fifth of the pairs are cross-lingual. Unlabeled pairs use train queries and further queries that "
        "are never graded, so they say nothing about dev/test queries.",
        "",
    ]
    for name in ("train", "dev", "test"):
        c = files[f"{name}.parquet"]["label_counts"]
        lines.append(f"- {name}: " + ", ".join(f"grade {g}: {n}" for g, n in c.items()))
    lines.append("")
    return "\n".join(lines)


def ensure(out_dir: str | os.PathLike[str], seed: int = 0, **sizes: int) -> dict[str, Any]:
    """The manifest of the sample in `out_dir`, generating it first unless a complete one with the same
    parameters is already there."""
    out = Path(out_dir)
    defaults = {"n_items": 2000, "n_queries": 300, "n_labeled": 3000, "n_unlabeled": 30000}
    unknown = sorted(set(sizes) - set(defaults))
    if unknown:
        raise TypeError(f"unknown size argument(s) {unknown}; expected some of {sorted(defaults)}")
    params = {"seed": seed, **defaults, **sizes}
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if (
        isinstance(manifest, dict)
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("params") == params
        and all((out / name).is_file() for name in FILES)
    ):
        return manifest
    return generate(out, **params)
