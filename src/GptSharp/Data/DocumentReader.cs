using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using GptSharp.Tokenization;
using GptSharp.IO;

namespace GptSharp.Data;

/// <summary>Which field of a record holds its text.</summary>
public sealed record CorpusReadOptions
{
    /// <summary>The Parquet column that holds the text (Hugging Face datasets call it <c>text</c>).</summary>
    public string TextColumn { get; init; } = "text";

    /// <summary>The JSON Lines field that holds the text.</summary>
    public string TextField { get; init; } = "text";

    public CorpusReadOptions Validate()
    {
        if (string.IsNullOrEmpty(TextColumn)) throw new ArgumentException("CorpusReadOptions.TextColumn must not be empty.");
        if (string.IsNullOrEmpty(TextField)) throw new ArgumentException("CorpusReadOptions.TextField must not be empty.");
        return this;
    }
}

/// <summary>Where a <see cref="DocumentReader"/> puts what it reads.</summary>
internal interface IDocumentSink
{
    /// <summary>
    /// Text of the corpus as valid UTF-8: a new document when <paramref name="startsDocument"/>, else more of the current one
    /// (a long <c>.txt</c> arrives in blocks, each cut where the tokenizer may cut). The span is valid only during the call.
    /// </summary>
    void Add(ReadOnlySpan<byte> utf8, bool startsDocument);

    /// <summary>
    /// One line of a JSON Lines file, not yet parsed: the sink gets its text with <see cref="DocumentReader.JsonText"/> where it
    /// likes (the corpus encoder does it on its workers: parsing JSON costs as much as a sixth of the tokenizer's time).
    /// </summary>
    void AddJsonLine(ReadOnlySpan<byte> line, long number);

    /// <summary>
    /// Data pages of a Parquet text column, as stored: the sink gets their texts with <see cref="DocumentReader.ParquetTexts"/>
    /// where it likes (the corpus encoder does it on its workers: decompressing and decoding pages costs a good part of the
    /// tokenizer's time, and there the texts go straight from the decompressed page to the tokenizer).
    /// </summary>
    void AddParquetPages(ParquetPageBatch batch, ReadOnlySpan<byte> stored);

    /// <summary>How many bytes of the current file (as stored, compressed or not) have been read so far.</summary>
    void FileBytesRead(long bytes);
}

/// <summary>
/// Streams the documents of one corpus file into a sink without ever holding the whole file: a <c>.txt</c> in blocks of
/// <see cref="BlockBytes"/>, JSON Lines a line at a time, Parquet a row group at a time. Every byte handed on is checked
/// UTF-8; a bad file is one <see cref="InvalidDataException"/> naming it and the place (byte offset, line or row group).
/// </summary>
internal static class DocumentReader
{
    /// <summary>Read size of text and JSON Lines files; a block grows only while it holds no place to cut (or, in JSON Lines, no line end).</summary>
    internal const int BlockBytes = 1 << 20;

    public static void Read(CorpusFile file, CorpusReadOptions options, IDocumentSink sink, CancellationToken cancellation = default)
    {
        try
        {
            switch (file.Format)
            {
                case DocumentFormat.Text: ReadText(file, sink, cancellation); break;
                case DocumentFormat.JsonLines: ReadJsonLines(file, sink, cancellation); break;
                case DocumentFormat.Parquet: ReadParquet(file, options.TextColumn, sink, cancellation); break;
                default: throw new InvalidDataException($"{file.Path}: a token file holds no text to read.");
            }
        }
        catch (Exception e) when (e is ZstdSharp.ZstdException || e is InvalidDataException && !e.Message.StartsWith(file.Path, StringComparison.Ordinal))
        {
            // Decompressors and Parquet.Net say what is wrong but not where: name the file.
            throw new InvalidDataException($"{file.Path}: {e.Message}", e);
        }
    }

    private static void ReadText(CorpusFile file, IDocumentSink sink, CancellationToken cancellation)
    {
        using var stream = file.OpenDecompressed(out var raw);
        using (raw)
        {
            byte[] buffer = new byte[BlockBytes];
            int filled = 0;
            long consumed = 0; // decompressed bytes handed on so far (for error offsets)
            bool first = true, bomChecked = false, any = false;
            while (true)
            {
                cancellation.ThrowIfCancellationRequested();
                if (filled == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2); // no place to cut in a whole block
                int read = stream.Read(buffer, filled, buffer.Length - filled);
                filled += read;
                sink.FileBytesRead(raw.Position);
                if (!bomChecked && (filled >= 3 || read == 0))
                {
                    bomChecked = true;
                    if (filled >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF)
                    {
                        Buffer.BlockCopy(buffer, 3, buffer, 0, filled - 3);
                        filled -= 3;
                        consumed = 3;
                    }
                }
                if (read == 0)
                {
                    if (filled > 0 || !any)
                    {
                        if (filled == 0 && !any) throw new InvalidDataException($"{file.Path}: the file is empty.");
                        Hand(buffer.AsSpan(0, filled));
                    }
                    return;
                }
                if (!bomChecked) continue;
                int cut = Gpt2Tokenizer.LastSafeCut(buffer.AsSpan(0, filled));
                if (cut <= 0) continue;
                Hand(buffer.AsSpan(0, cut));
                Buffer.BlockCopy(buffer, cut, buffer, 0, filled - cut);
                filled -= cut;
            }

            void Hand(ReadOnlySpan<byte> text)
            {
                if (!Utf8.IsValid(text))
                    throw new InvalidDataException($"{file.Path}: not valid UTF-8 ({(file.Compression == FileCompression.None ? "" : "decompressed ")}byte offset {consumed + Gpt2Tokenizer.IndexOfInvalidUtf8(text)}).");
                sink.Add(text, first);
                first = false;
                any = true;
                consumed += text.Length;
            }
        }
    }

    private static void ReadJsonLines(CorpusFile file, IDocumentSink sink, CancellationToken cancellation)
    {
        using var stream = file.OpenDecompressed(out var raw);
        using (raw)
        {
            byte[] buffer = new byte[BlockBytes];
            int start = 0, filled = 0;
            long line = 0;
            bool firstContent = true, eof = false;
            while (true)
            {
                int newline = buffer.AsSpan(start, filled - start).IndexOf((byte)'\n');
                if (newline < 0 && !eof)
                {
                    cancellation.ThrowIfCancellationRequested();
                    // Keep the partial line, then read more (growing the buffer only for a line longer than it).
                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, filled - start);
                        filled -= start;
                        start = 0;
                    }
                    if (filled == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2);
                    int read = stream.Read(buffer, filled, buffer.Length - filled);
                    sink.FileBytesRead(raw.Position);
                    if (read == 0) eof = true;
                    filled += read;
                    continue;
                }
                int end = newline < 0 ? filled : start + newline;
                var text = buffer.AsSpan(start, end - start);
                start = newline < 0 ? filled : end + 1;
                line++;
                if (text.Length > 0 && text[^1] == (byte)'\r') text = text[..^1];
                if (line == 1 && text.StartsWith("\uFEFF"u8)) text = text[3..];
                text = text.Trim(" \t"u8);
                if (text.Length > 0)
                {
                    if (firstContent && text[0] == (byte)'[')
                        throw new InvalidDataException($"{file.Path}: a JSON array, not JSON Lines (one object per line); convert it with `jq -c '.[]'`.");
                    firstContent = false;
                    sink.AddJsonLine(text, line);
                }
                if (eof && start >= filled) return;
            }
        }
    }

    /// <summary>
    /// The text of one JSON Lines record: its first top-level string field <paramref name="field"/> (UTF-8, unescaped into
    /// <paramref name="scratch"/> when it has escapes), or false for a record whose field is null. A line that is not valid
    /// UTF-8, not one JSON object (RFC 8259, up to the end of the line), has no such field, or holds another type there is an
    /// error naming the file and the line. Escaped lone surrogates become U+FFFD (<see cref="JsonTextField.Unescape"/>).
    /// </summary>
    internal static bool JsonText(ReadOnlySpan<byte> line, long number, string path, string field, scoped ref byte[] scratch, out ReadOnlySpan<byte> text)
    {
        text = default;
        // JSON text is UTF-8 (RFC 8259 §8.1): checked once for the whole line, so that neither path below has to.
        if (!Utf8.IsValid(line))
            throw new InvalidDataException($"{path}: line {number} is not valid UTF-8 (byte {Gpt2Tokenizer.IndexOfInvalidUtf8(line) + 1} of the line).");
        Span<byte> fieldBuffer = stackalloc byte[256];
        ReadOnlySpan<byte> fieldUtf8 = Encoding.UTF8.GetByteCount(field) <= fieldBuffer.Length
            ? fieldBuffer[..Encoding.UTF8.GetBytes(field, fieldBuffer)] : Encoding.UTF8.GetBytes(field);
        switch (JsonTextField.Find(line, fieldUtf8, out int start, out int length, out bool escaped))
        {
            case JsonTextField.Scan.Text:
                var raw = line.Slice(start, length);
                text = escaped ? JsonTextField.Unescape(raw, ref scratch) : raw;
                return true;
            case JsonTextField.Scan.Null:
                return false;
        }
        // Everything the scan is unsure of: Utf8JsonReader reads it and says what is wrong.
        var reader = new Utf8JsonReader(line, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new InvalidDataException($"{path}: line {number} is not a JSON object.");
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                bool wanted = reader.ValueTextEquals(field);
                reader.Read();
                if (!wanted)
                {
                    reader.Skip();
                    continue;
                }
                switch (reader.TokenType)
                {
                    case JsonTokenType.String:
                        var raw = reader.ValueSpan;
                        bool isEscaped = reader.ValueIsEscaped;
                        while (reader.Read()) { } // the rest of the line must be valid JSON too
                        text = isEscaped ? JsonTextField.Unescape(raw, ref scratch) : raw;
                        return true;
                    case JsonTokenType.Null:
                        while (reader.Read()) { }
                        return false; // a record without text (Hugging Face datasets have some): nothing to train on
                    default:
                        throw new InvalidDataException($"{path}: line {number}: field \"{field}\" is {reader.TokenType}, expected a string.");
                }
            }
            throw new InvalidDataException($"{path}: line {number} has no field \"{field}\" (use CorpusReadOptions.TextField to name the field that holds the text).");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException) // InvalidOperationException: a key the reader cannot unescape
        {
            throw new InvalidDataException($"{path}: line {number} is not valid JSON ({e.Message}).");
        }
    }

    private static void ReadParquet(CorpusFile file, string column, IDocumentSink sink, CancellationToken cancellation)
    {
        // Parquet needs to seek (its footer is at the end), so a whole-file .gz/.zst is unpacked to a temporary file first.
        string path = file.Path;
        string? temporary = null;
        try
        {
            if (file.Compression != FileCompression.None)
            {
                temporary = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"gptsharp-{Guid.NewGuid():N}.parquet");
                using var source = file.OpenDecompressed(out var raw);
                using (raw)
                using (var target = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.None))
                {
                    source.CopyTo(target, 1 << 20);
                }
                path = temporary;
            }
            ReadParquetFile(file.Path, path, column, sink, cancellation);
        }
        finally
        {
            if (temporary is not null) File.Delete(temporary);
        }
    }

    private static void ReadParquetFile(string name, string path, string column, IDocumentSink sink, CancellationToken cancellation)
    {
        try
        {
            ReadParquetRows(name, path, column, sink, cancellation);
        }
        catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException or InvalidDataException))
        {
            // Parquet.Net reports a corrupt file with exceptions of its own (Thrift, index, overflow...): one line naming the file.
            throw new InvalidDataException($"{name}: not a readable Parquet file ({e.GetType().Name}: {e.Message})", e);
        }
    }

    private static void ReadParquetRows(string name, string path, string column, IDocumentSink sink, CancellationToken cancellation)
    {
        long length = new FileInfo(path).Length;
        ParquetTextColumn.Read(name, path, column, group =>
        {
            if (group.Texts is { } texts)
                for (int i = 0; i < texts.Count; i++) sink.Add(texts[i], startsDocument: true);
            foreach (var batch in group.Batches) sink.AddParquetPages(batch, group.Chunk.AsSpan(batch.Start, batch.Length));
            sink.FileBytesRead(length * (group.Index + 1) / group.GroupCount);
        }, cancellation);
    }

    /// <summary>
    /// The texts of Parquet pages handed on by <see cref="IDocumentSink.AddParquetPages"/>, in row order (valid UTF-8). Pages that
    /// do not decode are read by Parquet.Net (from the first text not yet added), which either reads them or says what is wrong:
    /// one <see cref="InvalidDataException"/> naming the file and the row group.
    /// </summary>
    internal static void ParquetTexts(ParquetPageBatch batch, ReadOnlySpan<byte> stored, IUtf8Texts texts)
    {
        int added = 0;
        if (ParquetPages.TryDecode(batch, stored, texts, ref added)) return;
        var read = ParquetTextColumn.ReadBatch(batch);
        if (read.Count < added)
            throw new InvalidDataException($"{batch.Name}: row group {batch.RowGroup} holds {read.Count} texts in rows {batch.FirstRow} to {batch.FirstRow + batch.Rows} as Parquet.Net reads it, but {added} as its pages say: it is corrupt.");
        for (int i = added; i < read.Count; i++) texts.Add(read[i]);
    }
}
