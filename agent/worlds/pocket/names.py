"""The fixed name lists every pocket world draws from.

Names are copy-friendly on purpose: each list item is one distinct, simple, invented word, and
every world recombines the same words at random. A pocket tokenizer can make each of them a
single token, so a small model learns to *copy* a name out of a snippet rather than spell it, and
because every world reuses the same words in new combinations, it cannot recall facts from
earlier worlds: it has to read.

The words were produced once by a syllable generator and frozen here; they never change within
a WORLD_VERSION. Lists are pairwise disjoint, and no word is an English word the document
templates use. `all_name_words()` gives the full vocabulary for a tokenizer.
"""

from __future__ import annotations

# Given names (persons).
GIVEN: tuple = (
    'Kaste', 'Kregen', 'Bubre', 'Bamtind', 'Lemnan', 'Melsil', 'Hibar', 'Teno', 'Nozir', 'Lugen',
    'Relis', 'Havir', 'Krupon', 'Skosnok', 'Gutos', 'Hibral', 'Stahik', 'Nekok', 'Lornes', 'Mekral',
    'Brekrar', 'Krestu', 'Brunas', 'Tholsto', 'Lalern', 'Mopo', 'Banes', 'Mosan', 'Balil', 'Tundpo',
    'Zotok', 'Menkren', 'Pigo', 'Stornvu', 'Gadri', 'Thakorn', 'Zithak', 'Tobrek', 'Lumo', 'Stoske',
    'Rigern', 'Thoste', 'Thoskok', 'Mogro', 'Tronern', 'Tita', 'Senkul', 'Dretren', 'Sketrin',
    'Kemska', 'Skotor', 'Grornpi', 'Parand', 'Grogorn', 'Skezun', 'Helbik', 'Kralnir', 'Logal',
    'Krokuk', 'Brovon', 'Brakrok', 'Gondnim', 'Sumgro', 'Nigrim', 'Skadam', 'Vifol', 'Thikok',
    'Tosom', 'Kusan', 'Thoba', 'Puril', 'Thatrur', 'Trakdin', 'Drelin', 'Beka', 'Setak', 'Tupul',
    'Lozir', 'Thostek', 'Marzem', 'Krelzer', 'Ranlek', 'Thufirn', 'Grovo', 'Vakrern', 'Bostek',
    'Gredrel', 'Lernze', 'Fohum', 'Hasim', 'Bribond', 'Kramtho', 'Zerstu', 'Mendzo', 'Brupo',
    'Kaza', 'Pornta', 'Nuskek', 'Kokbrem', 'Thastik', 'Trobrom', 'Nekrol', 'Fembra', 'Vosam',
    'Skedras', 'Tiful', 'Stekan', 'Firgorn', 'Pikste', 'Batand', 'Mondga', 'Traba', 'Treskek',
    'Havor', 'Homak', 'Masbrol', 'Pornze', 'Skesfo', 'Kukte', 'Mude', 'Rekorn', 'Gramo', 'Krestim',
    'Stekum', 'Mostok', 'Pahul', 'Dravok', 'Ponas', 'Pamga', 'Tropam', 'Poven', 'Melbra', 'Nekthom',
    'Gokrin', 'Tidarn', 'Madurn', 'Kratro', 'Vegus', 'Storhu', 'Bruske', 'Thohern', 'Pomind',
    'Lugrur', 'Fefer', 'Losarn', 'Pula', 'Nunem', 'Nafe', 'Gugok', 'Skedur',
)

# Family names (persons).
FAMILY: tuple = (
    'Gortres', 'Trothes', 'Kumhon', 'Modrok', 'Lolbrir', 'Semond', 'Bramron', 'Finol', 'Gepos',
    'Nelbrarn', 'Skupum', 'Vengurn', 'Stither', 'Stano', 'Votom', 'Trolek', 'Katha', 'Pesko',
    'Skefa', 'Begur', 'Mendges', 'Zoska', 'Zisfok', 'Vektros', 'Hervek', 'Staris', 'Stagras',
    'Lethin', 'Stuzak', 'Vuthu', 'Fulim', 'Brernho', 'Moskul', 'Bugruk', 'Zegek', 'Gesto', 'Legram',
    'Hebra', 'Folmon', 'Holzos', 'Pakfind', 'Thadorn', 'Nektok', 'Bensa', 'Voros', 'Hobrond',
    'Kravo', 'Durek', 'Sarntak', 'Kadern', 'Razik', 'Haskarn', 'Vastan', 'Reszin', 'Grusam',
    'Paskik', 'Dodrol', 'Torek', 'Zazon', 'Redul', 'Drikdre', 'Skokthen', 'Garge', 'Dedri', 'Tenam',
    'Driharn', 'Grabra', 'Hotal', 'Honond', 'Skuro', 'Turtu', 'Stogos', 'Tragil', 'Mobek', 'Kraha',
    'Redrorn', 'Fekri', 'Hafern', 'Dorom', 'Sernmik', 'Ketas', 'Razak', 'Gethond', 'Rastem',
    'Trahus', 'Vanos', 'Hotul', 'Bopan', 'Drimar', 'Besten', 'Thokrek', 'Renlond', 'Tragrek',
    'Pekstus', 'Skaskund', 'Gomham', 'Rastur', 'Thedres', 'Magre', 'Kuthir', 'Krogre', 'Brilgron',
    'Skibrol', 'Legek', 'Gesdik', 'Delvu', 'Gikrend', 'Driskern', 'Braro', 'Kisku', 'Tiran',
    'Helnol', 'Krotum', 'Trapok', 'Skarstos', 'Bakam', 'Kregorn', 'Fefend', 'Lirnmul', 'Mogru',
    'Grotra', 'Ganlo', 'Trubrok', 'Hopond', 'Gruhul', 'Sifen', 'Grarnze', 'Lunum', 'Befam',
    'Bolges', 'Thesken', 'Dalfin', 'Murkek', 'Retrur', 'Vosend', 'Murand', 'Fufern', 'Merend',
    'Bridus', 'Lazus', 'Sukros', 'Legrok', 'Gedern', 'Thekes', 'Treki', 'Dakska', 'Studond',
    'Sodak', 'Suthor', 'Voske',
)

# Near-identical family names: (base, base + ending). Persons sharing a given name and
# carrying the two halves of a pair are the hardest distractors ("Kaste Brom" vs "Kaste Bromer").
FAMILY_PAIRS: tuple = (
    ('Krum', 'Krumow'), ('Thon', 'Thonow'), ('Brorn', 'Brornen'), ('Brend', 'Brendley'), ('Brom',
    'Bromer'), ('Fand', 'Fanden'), ('Pind', 'Pindow'), ('Gorn', 'Gornley'), ('Dron', 'Droning'),
    ('Nirn', 'Nirnow'), ('Stes', 'Steser'), ('Stok', 'Stoken'), ('Grend', 'Grendley'), ('Stak',
    'Stakow'), ('Drond', 'Dronding'), ('Skund', 'Skundley'), ('Skom', 'Skomer'), ('Skos',
    'Skosley'), ('Skon', 'Skonley'), ('Krond', 'Kronder'), ('Truk', 'Trukow'), ('Thind', 'Thindow'),
    ('Murn', 'Murnley'), ('Skam', 'Skamley'), ('Skurn', 'Skurnow'), ('Grind', 'Grindley'), ('Krind',
    'Krinder'), ('Gruk', 'Gruking'), ('Grosk', 'Grosking'), ('Thand', 'Thandley'),
)

# City names.
CITY: tuple = (
    'Datemar', 'Dukvoholm', 'Skokrusov', 'Hornbirn', 'Grafikvik', 'Tretiov', 'Bovenith', 'Revorvik',
    'Grotrovik', 'Befuholm', 'Krogumar', 'Nakrind', 'Hemvomith', 'Bimendith', 'Gretrosov',
    'Betrekith', 'Skokik', 'Triskarn', 'Pusol', 'Hopurnvik', 'Guzoka', 'Dresilith', 'Gegrana',
    'Theburna', 'Trinimov', 'Nopeholm', 'Gagesvik', 'Groturn', 'Thoskom', 'Ruveldal', 'Hebrurna',
    'Geskoldal', 'Sahul', 'Komoith', 'Dukria', 'Hebrenith', 'Rosala', 'Trefonmar', 'Grabelov',
    'Vononmar', 'Devea', 'Husenmar', 'Seskundal', 'Vogerith', 'Bogondvik', 'Bernzuov', 'Zasloma',
    'Lohordal', 'Faporholm', 'Fobrea', 'Zadaldal', 'Brobrevik', 'Liskenmar', 'Kosomar', 'Senenek',
    'Krasnovik', 'Brirfu', 'Pubrovik', 'Sastalmar', 'Ketea', 'Drakosdal', 'Lobro', 'Loskind',
    'Fovanvik', 'Zornvela', 'Hakarn', 'Skupirn', 'Beknuholm', 'Drustaov', 'Lorlonith', 'Begreith',
    'Leromar', 'Sebruek', 'Kregrurov', 'Hulkria', 'Beneholm', 'Mifedal', 'Grikro', 'Kuvar',
    'Begurnith', 'Storondal', 'Lutumar', 'Grahon', 'Gadudal', 'Nigenda', 'Lelirith', 'Dapelith',
    'Dokramdal', 'Nirer', 'Kepardal', 'Latimov', 'Brevon', 'Skiganith', 'Bugaldal', 'Gepend',
    'Lemgonda', 'Mondtea', 'Skemarmar', 'Segukek', 'Veskanmar', 'Hegernvik', 'Modradal', 'Dravorn',
    'Stistira', 'Drazol', 'Zuzolith', 'Duzuvik', 'Dreba', 'Rorukith', 'Tukrirn', 'Postormar',
    'Vidrenda', 'Doktama', 'Thepeholm', 'Skobokek', 'Simundvik', 'Dretek', 'Segusholm', 'Vekroek',
    'Gofanmar', 'Siviek', 'Dumvaholm', 'Brishidal', 'Brogrend', 'Vokrik', 'Stekervik', 'Skirus',
    'Gesamith', 'Logolvik', 'Munamov', 'Gahumdal', 'Kerbrokov', 'Kohes', 'Barakith', 'Skepusdal',
    'Daras', 'Vaserholm', 'Skomhunek', 'Krastorek', 'Pamskosov', 'Rafomek', 'Vifervik', 'Hifern',
    'Maduholm', 'Tenkrund', 'Hosko', 'Bistera', 'Thokuma', 'Nizesdal', 'Bepordal', 'Bobruldal',
    'Rutro', 'Kotun', 'Zekomholm', 'Pepenholm', 'Kronloa', 'Lanbrun', 'Stuskas', 'Lithu',
    'Braklemar', 'Grekra', 'Fethas', 'Drebukvik', 'Grastak', 'Nahurek', 'Topak', 'Kosto', 'Trizea',
    'Lasekvik', 'Zoteov', 'Lusus', 'Zikrosmar', 'Lolkres', 'Munadal', 'Skertrar', 'Bonthu',
    'Nanirvik', 'Pistes', 'Ramhanov', 'Sibrinek', 'Ninorek', 'Netresek', 'Nozornek', 'Donmarith',
    'Kiruov', 'Krines', 'Skofiholm', 'Lastirdal', 'Stetek', 'Lerngo', 'Skahua', 'Thetiholm',
    'Zolirek', 'Besvudal', 'Thupesvik', 'Vodimar', 'Nodand', 'Drirgraov', 'Badrikdal', 'Bobes',
    'Takilholm', 'Thelenith', 'Bubruldal', 'Drorernek', 'Marenith', 'Hehonvik', 'Kravomek',
    'Fukikith', 'Standmila', 'Rubriholm', 'Rasalov', 'Fokfolmar', 'Maktruov', 'Kasgodal',
    'Hevundov', 'Pumhim', 'Muska', 'Sakonvik', 'Brehel', 'Sorzela', 'Kagisdal', 'Binurov', 'Kivern',
    'Troparnov', 'Kumand', 'Dethernek', 'Bestadal', 'Stakelov', 'Stobosvik', 'Grupolmar', 'Kolpik',
    'Breko', 'Stivomar', 'Sitrarn', 'Vandvus', 'Pubromov', 'Gernvosek', 'Skerakvik', 'Kelenith',
    'Zarundov', 'Krogrund', 'Suhosek', 'Lerntho', 'Zitrorna', 'Bigos', 'Degirvik', 'Ligusholm',
    'Momthos', 'Hefolholm', 'Mibua', 'Brihondal', 'Stemthe', 'Karmiholm', 'Zalverek', 'Sekanmar',
    'Kastela', 'Brudrurov', 'Grokuholm', 'Runemar', 'Grasasov',
)

# Country names.
COUNTRY: tuple = (
    'Lisendia', 'Vufurnistan', 'Pokuia', 'Bobranene', 'Puthuia', 'Gadimark', 'Komeia', 'Vatrakia',
    'Nampokistan', 'Nabrokmark', 'Goskaistan', 'Mokrendora', 'Graneora', 'Zorlikia', 'Bradrinora',
    'Neskanland', 'Bikriland', 'Krekolistan', 'Zedrokia', 'Lanendmark', 'Lazakmark', 'Truluene',
    'Nukrondland', 'Grirntunene', 'Greveistan', 'Bribolistan', 'Govaia', 'Rindbeland', 'Grumosia',
    'Tepandia', 'Homoene', 'Mokriristan', 'Hokroene', 'Bomeistan', 'Hastunora', 'Defeia',
    'Sikronia', 'Drumernmark', 'Studraistan', 'Biskolene',
)

# Company name stems; a company is '<stem> <suffix>'.
COMPANY_STEM: tuple = (
    'Tozik', 'Destik', 'Krunik', 'Nebe', 'Bekdra', 'Krirtra', 'Landgri', 'Forthur', 'Negrem',
    'Kagrek', 'Fegrol', 'Tostarn', 'Bathurn', 'Vulfon', 'Posrol', 'Fobra', 'Zogru', 'Vebrik',
    'Dothim', 'Bornre', 'Mepund', 'Kropem', 'Ristol', 'Rornher', 'Skomthem', 'Zofir', 'Muder',
    'Tagro', 'Bralro', 'Gukre', 'Drira', 'Soskarn', 'Runond', 'Hedrak', 'Krastom', 'Thikro',
    'Fogol', 'Sirend', 'Distond', 'Lungro', 'Pabrir', 'Didro', 'Pestal', 'Brasand', 'Vestek',
    'Nakrurn', 'Hamkrarn', 'Saporn', 'Stebrok', 'Guval', 'Rihor', 'Gesand', 'Banen', 'Tazend',
    'Nankrar', 'Skeher', 'Stovek', 'Thebre', 'Lelgand', 'Kroskern', 'Fuvur', 'Parkrar', 'Hepel',
    'Trustan', 'Fosor', 'Bokurn', 'Thodros', 'Semarn', 'Sikron', 'Breskil', 'Drasis', 'Trotorn',
    'Bratren', 'Pafuk', 'Krepirn', 'Thesun', 'Hostek', 'Brotren', 'Pudru', 'Mendlom', 'Bridril',
    'Krebe', 'Skinend', 'Krukgro', 'Limen', 'Dupurn', 'Skegran', 'Thomel', 'Thovor', 'Skuli',
    'Riko', 'Dasu', 'Hevend', 'Handvu', 'Fedi', 'Vutron', 'Ribel', 'Bosku', 'Vovus', 'Napo',
    'Broske', 'Geme', 'Stasvond', 'Renis', 'Drimhend', 'Dindtan', 'Zedand', 'Skindtal', 'Thozel',
    'Thomir', 'Lefo', 'Tozend', 'Skerntak', 'Bagom', 'Guven', 'Garkrond', 'Kobre', 'Sover',
    'Brosga', 'Begok', 'Brefem', 'Nothok', 'Krolan', 'Droven', 'Ketam', 'Tavo', 'Trusar', 'Gotrand',
    'Rukum', 'Redre',
)

# University name stems; a university is '<stem> <kind>'.
UNIVERSITY_STEM: tuple = (
    'Trobin', 'Thosmor', 'Rozorn', 'Thukarn', 'Gabik', 'Voka', 'Migren', 'Kebrund', 'Vamond',
    'Zabra', 'Skanurn', 'Sastek', 'Kakra', 'Fahand', 'Stelbrul', 'Detrek', 'Thuskond', 'Pafok',
    'Tihend', 'Fodras', 'Haro', 'Lamom', 'Seru', 'Herol', 'Bobrom', 'Masil', 'Stotrir', 'Skazul',
    'Gratro', 'Sotarn', 'Lubras', 'Tramzo', 'Krolo', 'Thoske', 'Kronel', 'Tazol', 'Brakri',
    'Trodern', 'Hakrek', 'Pavik', 'Vitro', 'Kragro', 'Songar', 'Kigram', 'Thumves', 'Favul', 'Nubu',
    'Rari', 'Brarnfur', 'Zorus', 'Dostal', 'Stilun', 'Mabro', 'Grogrel', 'Sundgre', 'Graro',
    'Brilen', 'Gostram', 'Lolzu', 'Zade',
)

# Real English words: the second half of compound names (companies, universities, bands).
COMPANY_SUFFIX: tuple = (
    "Systems", "Solutions", "Labs", "Works", "Group", "Motors", "Foods", "Energy", "Logistics",
    "Media", "Robotics", "Textiles",
)
UNIVERSITY_KIND: tuple = ("University", "College", "Institute", "Academy")
BAND_ADJECTIVE: tuple = (
    "Amber", "Bitter", "Broken", "Copper", "Crimson", "Distant", "Electric", "Golden", "Hollow",
    "Iron", "Lonely", "Midnight", "Neon", "Paper", "Quiet", "Restless", "Rusty", "Silent",
    "Silver", "Velvet", "Wild", "Winter", "Wooden", "Hidden", "Frozen", "Glass", "Scarlet",
    "Stone", "Sudden", "Tired",
)
BAND_NOUN: tuple = (
    "Owls", "Foxes", "Wolves", "Ravens", "Lanterns", "Engines", "Rivers", "Pilots", "Sparrows",
    "Anchors", "Comets", "Mirrors", "Tigers", "Harbors", "Drifters", "Satellites", "Shadows",
    "Kings", "Horses", "Bells",
)

# Persons' family names: the plain list plus both halves of every near-identical pair.
FAMILY_ALL: tuple = FAMILY + tuple(w for pair in FAMILY_PAIRS for w in pair)


def word_lists() -> dict[str, tuple]:
    """Every list by name (what a tokenizer builder or a report needs)."""
    return {
        "given": GIVEN, "family": FAMILY_ALL, "city": CITY, "country": COUNTRY,
        "company_stem": COMPANY_STEM, "company_suffix": COMPANY_SUFFIX,
        "university_stem": UNIVERSITY_STEM, "university_kind": UNIVERSITY_KIND,
        "band_adjective": BAND_ADJECTIVE, "band_noun": BAND_NOUN,
    }


def all_name_words() -> list[str]:
    """Every word a pocket name can contain, sorted: one token each in a pocket tokenizer."""
    words = {w for lst in word_lists().values() for w in lst}
    return sorted(words | {"The"})  # "The" starts every band name
