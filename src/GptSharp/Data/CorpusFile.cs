namespace GptSharp.Data;

/// <summary>How the documents of a corpus file are laid out.</summary>
internal enum DocumentFormat
{
    /// <summary>A <c>.txt</c> file: the whole file is one document.</summary>
    Text,

    /// <summary>JSON Lines (<c>.jsonl</c>, or <c>.json</c> with one object per line): each line's text field is a document.</summary>
    JsonLines,

    /// <summary>A Parquet table (<c>.parquet</c>, as Hugging Face datasets publish them): each row's text column is a document.</summary>
    Parquet,

    /// <summary>Token ids already made (a <c>.bin</c>: GptSharp's token file, an llm.c shard or nanoGPT's bare uint16 ids).</summary>
    Tokens,
}

/// <summary>How a corpus file is compressed as a whole (Parquet compresses inside the file as well).</summary>
internal enum FileCompression { None, Gzip, Zstandard }

/// <summary>One file of a corpus: its path, what its name says it holds, and how it is compressed.</summary>
internal sealed record CorpusFile(string Path, DocumentFormat Format, FileCompression Compression)
{
    /// <summary>The file name endings <see cref="Classify"/> knows, for messages.</summary>
    public const string KnownEndings = ".txt, .jsonl, .json, .parquet (each optionally .gz or .zst) and token files .bin";

    /// <summary>What the name of <paramref name="path"/> says; a name with no known ending is a clear error.</summary>
    public static CorpusFile Classify(string path) =>
        TryClassify(path) ?? throw new InvalidDataException($"{path}: unknown corpus file type (expected {KnownEndings}).");

    /// <summary><see cref="Classify"/>, or null for a name with no known ending.</summary>
    public static CorpusFile? TryClassify(string path)
    {
        string name = System.IO.Path.GetFileName(path).ToLowerInvariant();
        var compression = FileCompression.None;
        if (name.EndsWith(".gz", StringComparison.Ordinal)) (compression, name) = (FileCompression.Gzip, name[..^3]);
        else if (name.EndsWith(".zst", StringComparison.Ordinal)) (compression, name) = (FileCompression.Zstandard, name[..^4]);
        DocumentFormat? format = System.IO.Path.GetExtension(name) switch
        {
            ".txt" => DocumentFormat.Text,
            ".jsonl" or ".json" => DocumentFormat.JsonLines,
            ".parquet" => DocumentFormat.Parquet,
            ".bin" when compression == FileCompression.None => DocumentFormat.Tokens,
            _ => null,
        };
        return format is DocumentFormat f ? new CorpusFile(path, f, compression) : null;
    }

    /// <summary>
    /// The file's bytes as a forward-only stream, decompressed when its name says so. <paramref name="raw"/> is the file itself,
    /// whose position tells how much of the file has been read (the progress bar's bytes).
    /// </summary>
    internal Stream OpenDecompressed(out FileStream raw)
    {
        raw = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        try
        {
            return Compression switch
            {
                FileCompression.Gzip => new System.IO.Compression.GZipStream(raw, System.IO.Compression.CompressionMode.Decompress),
                FileCompression.Zstandard => new ZstdSharp.DecompressionStream(raw),
                _ => raw,
            };
        }
        catch
        {
            raw.Dispose();
            throw;
        }
    }
}
