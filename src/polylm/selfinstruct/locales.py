"""Per-language texts: Alpaca's generation requirements written in the target language, the language's name
for translation prompts, field-label spellings a model may use, and the keyword blacklist.

PolyLM asks for the tasks in the target language (a prompt in English invites English answers), so the
requirements of Alpaca's prompt are rewritten in each of PolyLM's 18 languages. The field labels stay
`Instruction` / `Input` / `Output` in every language (one format for the parser and for people reading runs);
models that translate them anyway are still parsed through `labels`.

The blacklist is Alpaca's (image, picture, graph, file, map, draw, plot, video, audio, music, flowchart,
diagram, "go to"): tasks a text-only model cannot do. An entry ending in `*` matches any word it starts (for
inflected languages); `substring` languages (no spaces between words, or prefixes and particles glued to
words: zh, ja, th, ko, ar, he) match entries anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from polylm.errors import PolyLMError


@dataclass(frozen=True)
class Locale:
    code: str
    name: str
    """English name, for translation prompts."""
    intro: str
    """Opening paragraph; `{n}` is the number of tasks in the list."""
    requirements: str
    rules: tuple[str, ...]
    list_header: str
    labels: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())
    """Localized spellings of Instruction, Input, Output (accepted by the parser besides the English ones)."""
    blacklist: str = ""
    """Keywords separated by `|`."""
    substring: bool = False

    @cached_property
    def blacklist_pattern(self) -> re.Pattern | None:
        if not self.blacklist:
            return None
        parts = []
        for entry in self.blacklist.split("|"):
            word = re.escape(entry.rstrip("*").casefold())
            if self.substring:
                parts.append(word)
            else:
                parts.append(rf"\b{word}\w*" if entry.endswith("*") else rf"\b{word}\b")
        return re.compile("|".join(parts))

    def blacklisted(self, text: str) -> str | None:
        """The first blacklisted keyword found in `text` (case-insensitive), or None."""
        pattern = self.blacklist_pattern
        match = pattern.search(text.casefold()) if pattern else None
        return match.group(0) if match else None


_LOCALES = (
    Locale(
        "en",
        "English",
        "You are asked to come up with a set of {n} diverse task instructions written in English. They will be "
        "given to a language model, and we will evaluate how well it completes them.",
        "Here are the requirements:",
        (
            "Try not to repeat the verb across instructions, and mix questions with imperative instructions, to "
            "maximize diversity.",
            "The tasks should be of diverse types: open-ended generation, classification, editing, question "
            "answering and so on.",
            "A language model must be able to complete the instruction: do not ask for visual or audio output, or "
            "for actions in the world such as setting a reminder.",
            "Write the instruction, the input and the output in English. The instruction is 1 to 2 sentences long.",
            "The input is a specific, realistic example for the instruction (at most 100 words); write <noinput> "
            "when the instruction needs none.",
            "The output is an appropriate answer to the instruction and the input, in less than 100 words.",
            "Keep the labels Instruction, Input and Output and separate the tasks with ###.",
        ),
        "List of {n} tasks:",
        blacklist=(
            "image|images|picture|pictures|photo|photos|graph|graphs|file|files|map|maps|draw|plot|"
            "go to|video|videos|audio|music|flowchart|diagram|diagrams"
        ),
    ),
    Locale(
        "es",
        "Spanish",
        "Se te pide que propongas un conjunto de {n} tareas diversas escritas en español. Estas tareas se darán "
        "a un modelo de lenguaje y evaluaremos cómo las completa.",
        "Estos son los requisitos:",
        (
            "No repitas el mismo verbo en las instrucciones y combina preguntas con instrucciones en imperativo, "
            "para maximizar la diversidad.",
            "Los tipos de tareas deben ser variados: generación abierta, clasificación, edición, preguntas y "
            "respuestas, etc.",
            "Un modelo de lenguaje debe poder completar la instrucción: no pidas resultados visuales o de audio, "
            "ni acciones en el mundo real como poner una alarma.",
            "Escribe la instrucción, la entrada y la salida en español. La instrucción tiene 1 o 2 oraciones.",
            "La entrada da un ejemplo concreto y realista para la instrucción (como máximo 100 palabras); escribe "
            "<noinput> si la instrucción no la necesita.",
            "La salida es una respuesta adecuada a la instrucción y a la entrada, de menos de 100 palabras.",
            "Mantén las etiquetas Instruction, Input y Output en inglés y separa las tareas con ###.",
        ),
        "Lista de {n} tareas:",
        (("Instrucción", "Instruccion"), ("Entrada",), ("Salida",)),
        (
            "imagen|imágenes|foto|fotos|fotografía|fotografías|gráfico|gráficos|gráfica|gráficas|"
            "dibujo|dibujos|dibuja|dibujar|archivo|archivos|fichero|ficheros|mapa|mapas|video|vídeo|"
            "videos|vídeos|audio|audios|música|diagrama|diagramas"
        ),
    ),
    Locale(
        "fr",
        "French",
        "On vous demande de proposer un ensemble de {n} tâches variées rédigées en français. Elles seront "
        "données à un modèle de langue, et nous évaluerons la façon dont il les accomplit.",
        "Voici les consignes :",
        (
            "Évitez de répéter le même verbe d'une instruction à l'autre et mélangez questions et instructions à "
            "l'impératif, pour maximiser la diversité.",
            "Les types de tâches doivent être variés : génération libre, classification, correction, "
            "questions-réponses, etc.",
            "Un modèle de langue doit pouvoir accomplir l'instruction : ne demandez ni sortie visuelle ou audio, "
            "ni action dans le monde réel comme programmer un rappel.",
            "Rédigez l'instruction, l'entrée et la sortie en français. L'instruction fait 1 à 2 phrases.",
            "L'entrée est un exemple précis et réaliste pour l'instruction (100 mots au plus) ; écrivez <noinput> "
            "si l'instruction n'en a pas besoin.",
            "La sortie est une réponse appropriée à l'instruction et à l'entrée, en moins de 100 mots.",
            "Gardez les étiquettes Instruction, Input et Output en anglais et séparez les tâches par ###.",
        ),
        "Liste de {n} tâches :",
        (("Consigne",), ("Entrée",), ("Sortie",)),
        (
            "image|images|photo|photos|photographie*|graphique|graphiques|graphe|graphes|dessin|"
            "dessins|dessine*|dessiner|fichier|fichiers|carte|cartes|vidéo|vidéos|audio|musique|"
            "organigramme|diagramme|diagrammes"
        ),
    ),
    Locale(
        "de",
        "German",
        "Du sollst {n} vielfältige Aufgaben auf Deutsch ausdenken. Sie werden einem Sprachmodell gestellt, und "
        "wir bewerten, wie gut es sie löst.",
        "Die Anforderungen:",
        (
            "Wiederhole möglichst kein Verb und mische Fragen mit Aufforderungen im Imperativ, damit die Aufgaben "
            "vielfältig sind.",
            "Die Aufgabentypen sollen vielfältig sein: freies Schreiben, Klassifikation, Überarbeitung, Fragen "
            "beantworten usw.",
            "Ein Sprachmodell muss die Anweisung erfüllen können: verlange keine Bild- oder Tonausgabe und keine "
            "Handlungen in der Welt, etwa eine Erinnerung zu stellen.",
            "Schreibe Anweisung, Eingabe und Ausgabe auf Deutsch. Die Anweisung ist 1 bis 2 Sätze lang.",
            "Die Eingabe ist ein konkretes, realistisches Beispiel zur Anweisung (höchstens 100 Wörter); schreibe "
            "<noinput>, wenn die Anweisung keine braucht.",
            "Die Ausgabe ist eine passende Antwort auf Anweisung und Eingabe, mit weniger als 100 Wörtern.",
            "Behalte die Bezeichnungen Instruction, Input und Output auf Englisch bei und trenne die Aufgaben mit ###.",
        ),
        "Liste von {n} Aufgaben:",
        (("Anweisung", "Aufgabe"), ("Eingabe",), ("Ausgabe", "Antwort")),
        (
            "Bild|Bilder|Bildern|Foto|Fotos|Grafik|Grafiken|Diagramm|Diagramme|Diagrammen|"
            "Flussdiagramm*|Datei|Dateien|Karte|Karten|Landkarte*|zeichne|zeichnen|Zeichnung*|Video|"
            "Videos|Audio|Musik|gehe zu"
        ),
    ),
    Locale(
        "pt",
        "Portuguese",
        "Você deve criar um conjunto de {n} tarefas variadas escritas em português. Elas serão dadas a um modelo "
        "de linguagem, e avaliaremos como ele as realiza.",
        "Estes são os requisitos:",
        (
            "Evite repetir o mesmo verbo nas instruções e combine perguntas com instruções no imperativo, para "
            "maximizar a diversidade.",
            "Os tipos de tarefa devem ser variados: geração aberta, classificação, edição, perguntas e respostas etc.",
            "Um modelo de linguagem deve conseguir realizar a instrução: não peça saídas visuais ou de áudio, nem "
            "ações no mundo real, como definir um lembrete.",
            "Escreva a instrução, a entrada e a saída em português. A instrução tem 1 ou 2 frases.",
            "A entrada é um exemplo concreto e realista para a instrução (no máximo 100 palavras); escreva "
            "<noinput> quando a instrução não precisar dela.",
            "A saída é uma resposta adequada à instrução e à entrada, com menos de 100 palavras.",
            "Mantenha os rótulos Instruction, Input e Output em inglês e separe as tarefas com ###.",
        ),
        "Lista de {n} tarefas:",
        (("Instrução", "Instrucao"), ("Entrada",), ("Saída", "Saida")),
        (
            "imagem|imagens|foto|fotos|fotografia*|gráfico|gráficos|desenho|desenhos|desenhe|desenhar|"
            "arquivo|arquivos|ficheiro|ficheiros|mapa|mapas|vídeo|vídeos|video|áudio|música|"
            "fluxograma*|diagrama|diagramas"
        ),
    ),
    Locale(
        "it",
        "Italian",
        "Ti chiediamo di ideare un insieme di {n} compiti diversi scritti in italiano. Saranno dati a un modello "
        "linguistico e valuteremo come li svolge.",
        "Questi sono i requisiti:",
        (
            "Cerca di non ripetere lo stesso verbo e alterna domande e istruzioni all'imperativo, per massimizzare "
            "la varietà.",
            "I tipi di compito devono essere vari: generazione libera, classificazione, correzione, domande e "
            "risposte, ecc.",
            "Un modello linguistico deve poter svolgere l'istruzione: non chiedere output visivi o audio, né "
            "azioni nel mondo reale come impostare un promemoria.",
            "Scrivi l'istruzione, l'input e l'output in italiano. L'istruzione è lunga 1 o 2 frasi.",
            "L'input è un esempio concreto e realistico per l'istruzione (al massimo 100 parole); scrivi "
            "<noinput> se l'istruzione non ne ha bisogno.",
            "L'output è una risposta adeguata all'istruzione e all'input, in meno di 100 parole.",
            "Mantieni le etichette Instruction, Input e Output in inglese e separa i compiti con ###.",
        ),
        "Elenco di {n} compiti:",
        (("Istruzione",), ("Ingresso",), ("Uscita", "Risposta")),
        (
            "immagine|immagini|foto|fotografia*|grafico|grafici|disegno|disegni|disegna|disegnare|"
            "file|mappa|mappe|video|audio|musica|diagramma|diagrammi"
        ),
    ),
    Locale(
        "nl",
        "Dutch",
        "Bedenk een reeks van {n} gevarieerde taken, geschreven in het Nederlands. Ze worden aan een taalmodel "
        "gegeven en we beoordelen hoe goed het ze uitvoert.",
        "Dit zijn de eisen:",
        (
            "Herhaal liefst geen werkwoorden en wissel vragen af met opdrachten in de gebiedende wijs, voor zoveel "
            "mogelijk variatie.",
            "De soorten taken moeten gevarieerd zijn: vrij schrijven, classificatie, herschrijven, vragen "
            "beantwoorden enzovoort.",
            "Een taalmodel moet de instructie kunnen uitvoeren: vraag niet om beeld of geluid, of om handelingen "
            "in de echte wereld zoals een herinnering instellen.",
            "Schrijf de instructie, de invoer en de uitvoer in het Nederlands. De instructie is 1 à 2 zinnen lang.",
            "De invoer is een concreet, realistisch voorbeeld bij de instructie (hoogstens 100 woorden); schrijf "
            "<noinput> als de instructie er geen nodig heeft.",
            "De uitvoer is een passend antwoord op de instructie en de invoer, in minder dan 100 woorden.",
            "Houd de labels Instruction, Input en Output in het Engels en scheid de taken met ###.",
        ),
        "Lijst van {n} taken:",
        (("Instructie", "Opdracht"), ("Invoer",), ("Uitvoer", "Antwoord")),
        (
            "afbeelding|afbeeldingen|plaatje|plaatjes|foto|foto's|grafiek|grafieken|tekening|"
            "tekeningen|bestand|bestanden|kaart|kaarten|landkaart|video|video's|audio|muziek|"
            "stroomdiagram|diagram|diagrammen"
        ),
    ),
    Locale(
        "ru",
        "Russian",
        "Придумай набор из {n} разнообразных заданий на русском языке. Их дадут языковой модели, и мы оценим, "
        "насколько хорошо она их выполняет.",
        "Требования:",
        (
            "Старайся не повторять глаголы и чередуй вопросы с повелительными инструкциями, чтобы задания были "
            "разнообразнее.",
            "Типы заданий должны быть разными: свободное письмо, классификация, редактирование, ответы на вопросы "
            "и т. д.",
            "Языковая модель должна суметь выполнить инструкцию: не проси визуальный или звуковой результат и "
            "действия в реальном мире, например поставить напоминание.",
            "Пиши инструкцию, вход и выход на русском языке. Инструкция состоит из 1–2 предложений.",
            "Вход — конкретный реалистичный пример к инструкции (не более 100 слов); пиши <noinput>, если "
            "инструкции он не нужен.",
            "Выход — подходящий ответ на инструкцию и вход, короче 100 слов.",
            "Сохраняй метки Instruction, Input и Output на английском и разделяй задания символами ###.",
        ),
        "Список из {n} заданий:",
        (("Инструкция", "Задание"), ("Вход", "Ввод"), ("Выход", "Вывод", "Ответ")),
        (
            "изображени*|картинк*|фотографи*|фото|график*|диаграмм*|блок-схем*|файл*|карта|карты|"
            "карту|картой|карте|нарисуй*|нарисова*|рисун*|видео*|аудио*|музык*"
        ),
    ),
    Locale(
        "pl",
        "Polish",
        "Wymyśl zestaw {n} różnorodnych zadań napisanych po polsku. Zostaną one przekazane modelowi językowemu, "
        "a my ocenimy, jak dobrze je wykonuje.",
        "Wymagania:",
        (
            "Staraj się nie powtarzać czasowników i mieszaj pytania z poleceniami w trybie rozkazującym, aby "
            "zadania były jak najbardziej różnorodne.",
            "Rodzaje zadań powinny być różne: swobodne pisanie, klasyfikacja, redagowanie, odpowiadanie na pytania "
            "itp.",
            "Model językowy musi być w stanie wykonać polecenie: nie proś o obraz ani dźwięk ani o działania w "
            "świecie, takie jak ustawienie przypomnienia.",
            "Napisz polecenie, wejście i wyjście po polsku. Polecenie ma 1–2 zdania.",
            "Wejście to konkretny, realistyczny przykład do polecenia (najwyżej 100 słów); napisz <noinput>, "
            "jeśli polecenie go nie potrzebuje.",
            "Wyjście to odpowiednia odpowiedź na polecenie i wejście, krótsza niż 100 słów.",
            "Zachowaj etykiety Instruction, Input i Output po angielsku i oddzielaj zadania znakami ###.",
        ),
        "Lista {n} zadań:",
        (("Polecenie", "Instrukcja"), ("Wejście",), ("Wyjście", "Odpowiedź")),
        (
            "obraz*|zdjęci*|grafik*|wykres*|diagram*|schemat blokowy|plik*|mapa|mapy|mapę|narysuj*|"
            "rysun*|wideo|audio|muzyk*"
        ),
    ),
    Locale(
        "tr",
        "Turkish",
        "Türkçe yazılmış {n} çeşitli görev oluşturman isteniyor. Bu görevler bir dil modeline verilecek ve "
        "onları ne kadar iyi yerine getirdiğini değerlendireceğiz.",
        "Gereksinimler:",
        (
            "Çeşitliliği artırmak için aynı fiili tekrarlamamaya çalış ve soruları emir kipindeki talimatlarla "
            "karıştır.",
            "Görev türleri çeşitli olmalı: serbest metin üretimi, sınıflandırma, düzenleme, soru yanıtlama vb.",
            "Bir dil modeli talimatı yerine getirebilmeli: görsel veya sesli çıktı ya da hatırlatıcı kurmak gibi "
            "gerçek dünyada eylemler isteme.",
            "Talimatı, girdiyi ve çıktıyı Türkçe yaz. Talimat 1-2 cümle uzunluğunda olsun.",
            "Girdi, talimat için somut ve gerçekçi bir örnektir (en fazla 100 kelime); talimatın girdiye ihtiyacı "
            "yoksa <noinput> yaz.",
            "Çıktı, talimata ve girdiye uygun bir yanıttır ve 100 kelimeden kısadır.",
            "Instruction, Input ve Output etiketlerini İngilizce bırak ve görevleri ### ile ayır.",
        ),
        "{n} görevlik liste:",
        (("Talimat", "Görev"), ("Girdi",), ("Çıktı", "Yanıt")),
        (
            "resim*|görsel*|görüntü*|fotoğraf*|grafik*|diyagram*|akış şeması*|dosya*|harita*|çizin|"
            "çizmek|çiz|video*|ses kayd*|müzik*"
        ),
    ),
    Locale(
        "ar",
        "Arabic",
        "اقترح مجموعة من {n} مهمة متنوعة مكتوبة باللغة العربية. ستُعطى هذه المهام لنموذج لغوي، وسنقيّم مدى جودة "
        "إنجازه لها.",
        "هذه هي المتطلبات:",
        (
            "حاول ألا تكرر الفعل نفسه في التعليمات، وامزج بين الأسئلة وصيغ الأمر لتحقيق أكبر قدر من التنوع.",
            "يجب أن تتنوع أنواع المهام: كتابة حرة، وتصنيف، وتحرير، والإجابة عن الأسئلة، وغير ذلك.",
            "يجب أن يكون النموذج اللغوي قادرًا على تنفيذ التعليمة: لا تطلب مخرجات مرئية أو صوتية، ولا أفعالًا في "
            "العالم الحقيقي مثل ضبط تذكير.",
            "اكتب التعليمة والمدخل والمخرج باللغة العربية. تتكون التعليمة من جملة أو جملتين.",
            "المدخل مثال محدد وواقعي للتعليمة (100 كلمة على الأكثر)؛ اكتب <noinput> إذا لم تحتج التعليمة إلى مدخل.",
            "المخرج إجابة مناسبة للتعليمة والمدخل، في أقل من 100 كلمة.",
            "احتفظ بالتسميات Instruction و Input و Output بالإنجليزية، وافصل بين المهام بـ ###.",
        ),
        "قائمة من {n} مهمة:",
        (("التعليمة", "التعليمات", "تعليمات"), ("المدخل", "المدخلات"), ("المخرج", "المخرجات")),
        ("صورة|الصور|صور |رسم بياني|رسما|ارسم|ملف|ملفات|خريطة|خرائط|فيديو|مقطع صوتي|تسجيل صوتي|موسيقى|مخطط"),
        substring=True,
    ),
    Locale(
        "he",
        "Hebrew",
        "עליך להציע סדרה של {n} משימות מגוונות הכתובות בעברית. המשימות יינתנו למודל שפה, ואנחנו נעריך כמה טוב "
        "הוא מבצע אותן.",
        "אלה הדרישות:",
        (
            "השתדל לא לחזור על אותו פועל, ושלב שאלות עם הוראות בלשון ציווי, כדי שהמשימות יהיו מגוונות ככל האפשר.",
            "סוגי המשימות צריכים להיות מגוונים: כתיבה חופשית, סיווג, עריכה, מענה על שאלות וכדומה.",
            "מודל שפה צריך להיות מסוגל לבצע את ההוראה: אל תבקש פלט חזותי או קולי, או פעולות בעולם האמיתי כמו "
            "הגדרת תזכורת.",
            "כתוב את ההוראה, הקלט והפלט בעברית. ההוראה באורך משפט אחד עד שניים.",
            "הקלט הוא דוגמה מוחשית ומציאותית להוראה (עד 100 מילים); כתוב <noinput> אם ההוראה אינה צריכה קלט.",
            "הפלט הוא תשובה מתאימה להוראה ולקלט, בפחות מ-100 מילים.",
            "השאר את התוויות Instruction, Input ו-Output באנגלית והפרד בין המשימות באמצעות ###.",
        ),
        "רשימה של {n} משימות:",
        (("הוראה",), ("קלט",), ("פלט",)),
        ("תמונה|תמונות|צילום|גרף|גרפים|תרשים|קובץ|קבצים|מפה|מפות|צייר|ציור|וידאו|סרטון|אודיו|מוזיקה"),
        substring=True,
    ),
    Locale(
        "ja",
        "Japanese",
        "日本語で書かれた多様なタスクを{n}個考えてください。これらのタスクは言語モデルに与えられ、どれだけうまく"
        "こなせるかを評価します。",
        "要件は次のとおりです。",
        (
            "多様性を高めるため、同じ動詞を繰り返さないようにし、質問文と命令文を混ぜてください。",
            "タスクの種類は多様にしてください。自由な文章生成、分類、編集、質問応答などです。",
            "言語モデルが実行できる指示にしてください。視覚的な出力や音の出力、リマインダーの設定のような現実世界"
            "での行動を求めないでください。",
            "指示、入力、出力はすべて日本語で書いてください。指示は1〜2文にしてください。",
            "入力は指示に対する具体的で現実的な例です（100語以内）。入力が不要な場合は<noinput>と書いてください。",
            "出力は指示と入力に対する適切な回答で、100語未満にしてください。",
            "Instruction、Input、Outputのラベルは英語のままにし、タスクは###で区切ってください。",
        ),
        "{n}個のタスクのリスト：",
        (("指示", "命令", "タスク"), ("入力",), ("出力", "回答")),
        (
            "画像|写真|図を|図表|図解|の図|図の|図に|図で|グラフ|ファイル|地図|マップ|描いて|描く|絵を|動画|ビデオ|音声|音楽|フローチャート|ダイアグラム"
        ),
        substring=True,
    ),
    Locale(
        "zh",
        "Chinese",
        "请想出一组{n}个用中文写的多样化任务。这些任务将交给一个语言模型，我们会评估它完成任务的好坏。",
        "要求如下：",
        (
            "尽量不要重复使用同一个动词，并把疑问句和祈使句混合使用，以最大限度地提高多样性。",
            "任务类型应当多样：开放式生成、分类、编辑、问答等。",
            "语言模型必须能够完成该指令：不要要求视觉或声音输出，也不要要求在现实世界中采取行动，比如设置提醒。",
            "指令、输入和输出都用中文书写。指令为一到两句话。",
            "输入是该指令的一个具体而真实的例子（不超过100个词）；如果指令不需要输入，就写<noinput>。",
            "输出是对指令和输入的恰当回答，少于100个词。",
            "保留英文标签Instruction、Input和Output，并用###分隔各个任务。",
        ),
        "{n}个任务的列表：",
        (("指令", "任务"), ("输入",), ("输出", "回答")),
        (
            "图片|图像|照片|图表|图形|曲线图|文件|地图|画一|绘制|画出|视频|音频|音乐|流程图|示意图|圖片|圖像|檔案|地圖|影片|音樂|流程圖"
        ),
        substring=True,
    ),
    Locale(
        "ko",
        "Korean",
        "한국어로 작성된 다양한 작업 {n}개를 만들어 주세요. 이 작업들은 언어 모델에게 주어지며, 모델이 얼마나 잘 "
        "수행하는지 평가할 것입니다.",
        "요구 사항은 다음과 같습니다.",
        (
            "다양성을 높이기 위해 같은 동사를 반복하지 말고, 질문과 명령문을 섞어 주세요.",
            "작업 유형은 다양해야 합니다. 자유 생성, 분류, 편집, 질의응답 등이 있습니다.",
            "언어 모델이 수행할 수 있는 지시여야 합니다. 시각적 또는 음성 출력이나 알림 설정처럼 현실 세계에서의 "
            "행동을 요구하지 마세요.",
            "지시, 입력, 출력을 모두 한국어로 작성하세요. 지시는 1~2문장입니다.",
            "입력은 지시에 대한 구체적이고 현실적인 예시입니다(최대 100단어). 입력이 필요 없으면 <noinput>이라고 "
            "쓰세요.",
            "출력은 지시와 입력에 대한 적절한 답변이며 100단어 미만입니다.",
            "Instruction, Input, Output 라벨은 영어로 유지하고 작업은 ###로 구분하세요.",
        ),
        "{n}개 작업 목록:",
        (("지시", "지시문", "명령"), ("입력",), ("출력", "답변")),
        ("이미지|사진|그림|그래프|도표|다이어그램|순서도|파일|지도를|지도에서|그려|그리기|동영상|비디오|오디오|음악"),
        substring=True,
    ),
    Locale(
        "th",
        "Thai",
        "โปรดคิดชุดงานที่หลากหลายจำนวน {n} งานซึ่งเขียนเป็นภาษาไทย งานเหล่านี้จะถูกส่งให้โมเดลภาษา "
        "และเราจะประเมินว่าโมเดลทำงานได้ดีเพียงใด",
        "ข้อกำหนดมีดังนี้",
        (
            "พยายามอย่าใช้คำกริยาซ้ำกัน และผสมคำถามกับประโยคคำสั่ง เพื่อให้มีความหลากหลายมากที่สุด",
            "ประเภทของงานควรหลากหลาย เช่น การเขียนอิสระ การจัดหมวดหมู่ การแก้ไขข้อความ การตอบคำถาม เป็นต้น",
            "โมเดลภาษาต้องทำตามคำสั่งได้ ห้ามขอผลลัพธ์ที่เป็นภาพหรือเสียง หรือการกระทำในโลกจริง เช่น การตั้งการแจ้งเตือน",
            "เขียนคำสั่ง ข้อมูลนำเข้า และผลลัพธ์เป็นภาษาไทย คำสั่งมีความยาว 1 ถึง 2 ประโยค",
            "ข้อมูลนำเข้าคือตัวอย่างที่เจาะจงและสมจริงสำหรับคำสั่ง (ไม่เกิน 100 คำ) ถ้าคำสั่งไม่ต้องการข้อมูลนำเข้า ให้เขียน <noinput>",
            "ผลลัพธ์คือคำตอบที่เหมาะสมกับคำสั่งและข้อมูลนำเข้า ยาวไม่เกิน 100 คำ",
            "ใช้ป้ายกำกับ Instruction, Input และ Output เป็นภาษาอังกฤษ และคั่นแต่ละงานด้วย ###",
        ),
        "รายการงาน {n} งาน:",
        (("คำสั่ง", "คำแนะนำ"), ("ข้อมูลนำเข้า", "อินพุต", "ข้อมูลเข้า"), ("ผลลัพธ์", "เอาต์พุต", "คำตอบ")),
        ("รูปภาพ|ภาพถ่าย|รูปถ่าย|กราฟ|แผนภูมิ|แผนภาพ|ไฟล์|แผนที่|วาดรูป|วาดภาพ|วีดีโอ|วิดีโอ|ดนตรี|ผังงาน"),
        substring=True,
    ),
    Locale(
        "vi",
        "Vietnamese",
        "Hãy nghĩ ra một tập hợp gồm {n} nhiệm vụ đa dạng được viết bằng tiếng Việt. Các nhiệm vụ này sẽ được "
        "giao cho một mô hình ngôn ngữ và chúng tôi sẽ đánh giá mức độ hoàn thành của nó.",
        "Đây là các yêu cầu:",
        (
            "Cố gắng không lặp lại động từ giữa các chỉ dẫn, và kết hợp câu hỏi với câu mệnh lệnh để tối đa hóa "
            "sự đa dạng.",
            "Các loại nhiệm vụ cần đa dạng: sáng tác tự do, phân loại, chỉnh sửa, trả lời câu hỏi, v.v.",
            "Mô hình ngôn ngữ phải thực hiện được chỉ dẫn: đừng yêu cầu đầu ra hình ảnh hay âm thanh, hoặc hành "
            "động trong thế giới thực như đặt lời nhắc.",
            "Viết chỉ dẫn, đầu vào và đầu ra bằng tiếng Việt. Chỉ dẫn dài 1 đến 2 câu.",
            "Đầu vào là một ví dụ cụ thể, thực tế cho chỉ dẫn (tối đa 100 từ); viết <noinput> nếu chỉ dẫn không "
            "cần đầu vào.",
            "Đầu ra là câu trả lời phù hợp với chỉ dẫn và đầu vào, dưới 100 từ.",
            "Giữ nguyên các nhãn Instruction, Input và Output bằng tiếng Anh và phân tách các nhiệm vụ bằng ###.",
        ),
        "Danh sách {n} nhiệm vụ:",
        (("Chỉ dẫn", "Hướng dẫn"), ("Đầu vào",), ("Đầu ra",)),
        ("hình ảnh|bức ảnh|biểu đồ|đồ thị|tệp|tập tin|bản đồ|vẽ|video|âm thanh|âm nhạc|sơ đồ"),
    ),
    Locale(
        "id",
        "Indonesian",
        "Buatlah sekumpulan {n} tugas yang beragam dan ditulis dalam bahasa Indonesia. Tugas-tugas ini akan "
        "diberikan kepada model bahasa, dan kami akan menilai seberapa baik model itu menyelesaikannya.",
        "Berikut persyaratannya:",
        (
            "Usahakan tidak mengulang kata kerja yang sama, dan campurkan pertanyaan dengan kalimat perintah agar "
            "tugasnya seberagam mungkin.",
            "Jenis tugas harus beragam: pembuatan teks bebas, klasifikasi, penyuntingan, tanya jawab, dan sebagainya.",
            "Model bahasa harus dapat menjalankan instruksinya: jangan meminta keluaran visual atau audio, atau "
            "tindakan di dunia nyata seperti memasang pengingat.",
            "Tulis instruksi, masukan, dan keluaran dalam bahasa Indonesia. Instruksi terdiri dari 1 sampai 2 kalimat.",
            "Masukan adalah contoh yang spesifik dan realistis untuk instruksi (paling banyak 100 kata); tulis "
            "<noinput> jika instruksi tidak memerlukannya.",
            "Keluaran adalah jawaban yang sesuai untuk instruksi dan masukan, kurang dari 100 kata.",
            "Pertahankan label Instruction, Input, dan Output dalam bahasa Inggris dan pisahkan tugas dengan ###.",
        ),
        "Daftar {n} tugas:",
        (("Instruksi", "Perintah"), ("Masukan",), ("Keluaran", "Jawaban")),
        ("gambar|foto|grafik|diagram|bagan|berkas|file|peta|menggambar|video|audio|musik"),
    ),
)

LOCALES: dict[str, Locale] = {locale.code: locale for locale in _LOCALES}


def locale(code: str) -> Locale:
    """The locale of a language code; a PolyLMError naming the supported ones for any other."""
    if code not in LOCALES:
        raise PolyLMError(f"self-instruct: unknown language {code!r}; supported: {', '.join(sorted(LOCALES))}")
    return LOCALES[code]
