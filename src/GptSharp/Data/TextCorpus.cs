using System.Reflection;
using System.Text;

namespace GptSharp.Data;

/// <summary>
/// Reading training text: the bundled The Verdict, a single file, or a directory / glob of <c>.txt</c>
/// files joined with <c>&lt;|endoftext|&gt;</c> (as the book's Project Gutenberg bonus does), and the
/// book's 90/10 train/validation split by characters.
/// </summary>
public static class TextCorpus
{
    /// <summary>The separator placed between documents (GPT-2's only special token, id 50256).</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>Name used in messages and configs for the bundled text.</summary>
    public const string BundledVerdictName = "the-verdict.txt (bundled)";

    /// <summary>The short story chapter 5 trains on, shipped inside the library (20,479 characters).</summary>
    public static string TheVerdict()
    {
        using var stream = typeof(TextCorpus).Assembly.GetManifestResourceStream("GptSharp.the-verdict.txt")
            ?? throw new InvalidOperationException("The bundled the-verdict.txt resource is missing from the library.");
        using var reader = new StreamReader(stream, new UTF8Encoding(false, true));
        return reader.ReadToEnd();
    }

    /// <summary>
    /// The corpus files that <paramref name="pathOrPattern"/> names: one file, every file of a known kind under a directory
    /// (recursively: .txt, .jsonl, .json, .parquet, each optionally .gz or .zst; token files are named by a file or a glob),
    /// or a glob with <c>*</c>/<c>?</c> in the file-name part (<c>data/*.txt</c>, <c>shards/*_train_*.bin</c>), in ordinal
    /// order so a corpus always joins the same way. A matched file of no known kind is a clear error.
    /// </summary>
    public static IReadOnlyList<string> ResolveFiles(string pathOrPattern)
    {
        if (string.IsNullOrWhiteSpace(pathOrPattern)) throw new ArgumentException("RunConfig.Data: no path given.");
        string[] files;
        if (File.Exists(pathOrPattern))
            files = [pathOrPattern];
        else if (Directory.Exists(pathOrPattern))
            files = Directory.GetFiles(pathOrPattern, "*", SearchOption.AllDirectories)
                .Where(f => CorpusFile.TryClassify(f) is { Format: not DocumentFormat.Tokens }).ToArray();
        else
        {
            string? directory = Path.GetDirectoryName(pathOrPattern);
            string pattern = Path.GetFileName(pathOrPattern);
            if (pattern.IndexOfAny(['*', '?']) < 0)
                throw new FileNotFoundException($"RunConfig.Data: '{pathOrPattern}' is not a file, a directory or a glob.");
            if (string.IsNullOrEmpty(directory)) directory = ".";
            if (!Directory.Exists(directory))
                throw new DirectoryNotFoundException($"RunConfig.Data: directory '{directory}' does not exist.");
            files = Directory.GetFiles(directory, pattern, SearchOption.TopDirectoryOnly);
        }
        Array.Sort(files, StringComparer.Ordinal);
        if (files.Length == 0) throw new FileNotFoundException($"RunConfig.Data: no corpus files ({CorpusFile.KnownEndings}) found in '{pathOrPattern}'.");
        foreach (string file in files)
            if (CorpusFile.TryClassify(file) is null && !TokenFile.IsTokenFile(file)) CorpusFile.Classify(file); // names the file
        return files;
    }

    /// <summary>Reads one file as strict UTF-8: an empty file or invalid bytes are an error naming the file.</summary>
    public static string ReadTextFile(string path) => ReadCorpus([path]);

    /// <summary>
    /// The documents of all files (every record of a JSON Lines or Parquet file is one), joined with <see cref="EndOfText"/>,
    /// in memory: for training straight from text. A big corpus goes through <see cref="CorpusPreparation"/> instead.
    /// </summary>
    public static string ReadCorpus(IReadOnlyList<string> files, CorpusReadOptions? options = null)
    {
        options ??= new CorpusReadOptions();
        var sink = new JoiningSink(options.TextField);
        foreach (string file in files)
        {
            sink.FilePath = file;
            DocumentReader.Read(CorpusFile.Classify(file), options, sink);
        }
        return Encoding.UTF8.GetString(sink.Text.GetBuffer(), 0, (int)sink.Text.Length);
    }

    private sealed class JoiningSink(string field) : IDocumentSink, IUtf8Texts
    {
        public readonly MemoryStream Text = new();
        public string FilePath = "";
        private bool _any;
        private byte[] _scratch = [];

        public void AddJsonLine(ReadOnlySpan<byte> line, long number)
        {
            if (DocumentReader.JsonText(line, number, FilePath, field, ref _scratch, out var text)) Add(text, startsDocument: true);
        }

        public void Add(ReadOnlySpan<byte> utf8, bool startsDocument)
        {
            if (startsDocument && _any) Text.Write("<|endoftext|>"u8);
            _any = true;
            Text.Write(utf8);
        }

        public void AddParquetPages(ParquetPageBatch batch, ReadOnlySpan<byte> stored) => DocumentReader.ParquetTexts(batch, stored, this);

        void IUtf8Texts.Add(ReadOnlySpan<byte> utf8) => Add(utf8, startsDocument: true);

        public void FileBytesRead(long bytes) { }
    }

    /// <summary>
    /// The book's split: <c>split_idx = int(train_ratio * len(text_data))</c>, training text before it,
    /// validation text after. Characters are UTF-16 code units here and Unicode code points in Python;
    /// they agree for The Verdict (all BMP), and a split that would cut a surrogate pair moves one unit later.
    /// </summary>
    public static (string Train, string Validation) SplitTrainValidation(string text, double trainRatio = 0.9)
    {
        if (!(trainRatio > 0 && trainRatio < 1)) throw new ArgumentException($"train_ratio must be in (0, 1), got {trainRatio}.");
        int split = (int)(trainRatio * text.Length);
        if (split > 0 && split < text.Length && char.IsLowSurrogate(text[split])) split++;
        return (text[..split], text[split..]);
    }
}
