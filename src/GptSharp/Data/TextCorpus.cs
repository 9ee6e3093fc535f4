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
    /// The .txt files that <paramref name="pathOrPattern"/> names: one file, every .txt file under a
    /// directory (recursively), or a glob with <c>*</c>/<c>?</c> in the file-name part (<c>data/*.txt</c>),
    /// in ordinal order so a corpus always joins the same way.
    /// </summary>
    public static IReadOnlyList<string> ResolveFiles(string pathOrPattern)
    {
        if (string.IsNullOrWhiteSpace(pathOrPattern)) throw new ArgumentException("--data: no path given.");
        string[] files;
        if (File.Exists(pathOrPattern))
            files = [pathOrPattern];
        else if (Directory.Exists(pathOrPattern))
            files = Directory.GetFiles(pathOrPattern, "*.txt", SearchOption.AllDirectories);
        else
        {
            string? directory = Path.GetDirectoryName(pathOrPattern);
            string pattern = Path.GetFileName(pathOrPattern);
            if (pattern.IndexOfAny(['*', '?']) < 0)
                throw new FileNotFoundException($"--data: '{pathOrPattern}' is not a file, a directory or a glob.");
            if (string.IsNullOrEmpty(directory)) directory = ".";
            if (!Directory.Exists(directory))
                throw new DirectoryNotFoundException($"--data: directory '{directory}' does not exist.");
            files = Directory.GetFiles(directory, pattern, SearchOption.TopDirectoryOnly);
        }
        Array.Sort(files, StringComparer.Ordinal);
        if (files.Length == 0) throw new FileNotFoundException($"--data: no .txt files found in '{pathOrPattern}'.");
        return files;
    }

    /// <summary>Reads one file as strict UTF-8: an empty file or invalid bytes are an error naming the file.</summary>
    public static string ReadTextFile(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length == 0) throw new InvalidDataException($"{path}: the file is empty.");
        try
        {
            var utf8 = new UTF8Encoding(false, true);
            int skip = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
            string text = utf8.GetString(bytes, skip, bytes.Length - skip);
            if (text.Length == 0) throw new InvalidDataException($"{path}: the file is empty.");
            return text;
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{path}: not valid UTF-8 (byte offset {e.Index}).");
        }
    }

    /// <summary>The text of all files, joined with <see cref="EndOfText"/>.</summary>
    public static string ReadCorpus(IReadOnlyList<string> files)
    {
        var builder = new StringBuilder();
        for (int i = 0; i < files.Count; i++)
        {
            if (i > 0) builder.Append(EndOfText);
            builder.Append(ReadTextFile(files[i]));
        }
        return builder.ToString();
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
