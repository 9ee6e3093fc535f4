using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Text;
using GptSharp.IO;
using GptSharp.Tensors;

namespace GptSharp.Data;

/// <summary>
/// The text column of a Parquet file, row group after row group in order, decoded ahead on <see cref="Decoders"/> threads of
/// their own (each with its own file handle and Parquet.Net reader, taking every n-th row group), while the caller turns the
/// previous groups into documents and the tokenizer encodes them. One decoder reads text at several times
/// the rate one core tokenizes it, so a decoder per five workers keeps the reader off the critical path on any machine.
/// Pages of the common forms are decoded by <see cref="ParquetPages"/> (UTF-8 copied straight out of the page), the rest by
/// Parquet.Net. Memory: at most two row groups per decoder plus the one being handed on, each its text column as UTF-8,
/// and per decoder one column chunk as stored plus one decompressed page.
/// </summary>
internal static class ParquetTextColumn
{
    /// <summary>The non-null texts of one row group in row order, as valid UTF-8 (an invalid byte becomes U+FFFD, as Parquet.Net decodes it).</summary>
    internal sealed record Group(int Index, int GroupCount, TextGroupBuilder Texts, bool FromPages);

    internal static int Decoders => Math.Clamp((Workers.Count + 4) / 5, 1, 4);

    /// <summary>
    /// Calls <paramref name="consume"/> for every row group of column <paramref name="column"/> in order, on the calling thread.
    /// A bad file (no such column, not text, a corrupt row group) is one <see cref="InvalidDataException"/> naming
    /// <paramref name="name"/>, raised when its turn comes.
    /// </summary>
    public static void Read(string name, string path, string column, Action<Group> consume, CancellationToken cancellation, int? decoders = null)
    {
        int groups;
        using (var file = Open(name, path, column, cancellation, out _)) groups = file.Reader.RowGroupCount;
        if (groups == 0) return;
        decoders = Math.Min(decoders ?? Decoders, groups);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        int step = decoders.Value;
        var ready = new BlockingCollection<(Group? Group, ExceptionDispatchInfo? Error)>[step];
        var tasks = new Task[step];
        try
        {
            for (int d = 0; d < step; d++)
            {
                var queue = ready[d] = new BlockingCollection<(Group?, ExceptionDispatchInfo?)>(boundedCapacity: 1);
                int first = d;
                tasks[d] = Task.Factory.StartNew(() => Decode(name, path, column, first, step, queue, stop.Token),
                    stop.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            }
            for (int g = 0; g < groups; g++)
            {
                var (group, error) = ready[g % step].Take(stop.Token);
                error?.Throw();
                consume(group!);
            }
        }
        finally
        {
            stop.Cancel();
            foreach (var task in tasks)
            {
                try { task?.Wait(); } catch (AggregateException) { } // cancelled, or an error already raised above
            }
            foreach (var queue in ready) queue?.Dispose();
        }
    }

    /// <summary>Decodes row groups <paramref name="first"/>, first + step, ... into <paramref name="ready"/>; its first error ends it.</summary>
    private static void Decode(string name, string path, string column, int first, int step,
        BlockingCollection<(Group?, ExceptionDispatchInfo?)> ready, CancellationToken cancellation)
    {
        try
        {
            using var file = Open(name, path, column, cancellation, out var field);
            int groups = file.Reader.RowGroupCount;
            for (int g = first; g < groups; g += step)
            {
                cancellation.ThrowIfCancellationRequested();
                Group group;
                try
                {
                    group = DecodeGroup(name, file, field, g, cancellation);
                }
                catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException))
                {
                    ready.Add((null, ExceptionDispatchInfo.Capture(e)), cancellation);
                    return;
                }
                ready.Add((group, null), cancellation);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            try { ready.Add((null, ExceptionDispatchInfo.Capture(e)), cancellation); } catch (OperationCanceledException) { }
        }
    }

    private static Group DecodeGroup(string name, OpenFile file, Parquet.Schema.DataField field, int g, CancellationToken cancellation)
    {
        try
        {
            using var group = file.Reader.OpenRowGroupReader(g);
            // A corrupt footer may claim any number of rows: more than 8 a byte of the file is not text to train on.
            long rows = group.RowCount;
            if (rows < 0 || rows > Math.Min(Array.MaxLength, 8 * file.Length + 1024))
                throw new InvalidDataException($"{name}: row group {g} claims {rows} rows in a file of {file.Length} bytes: it is corrupt.");
            var meta = group.GetMetadata(field)?.MetaData;
            long valueCount = meta?.NumValues ?? rows;
            if (valueCount != rows)
                throw new InvalidDataException($"{name}: row group {g} has {rows} rows but {valueCount} values in column \"{field.Name}\": it is corrupt.");
            var texts = new TextGroupBuilder((int)Math.Clamp(meta?.TotalUncompressedSize ?? 0, 1 << 16, 64 << 20));
            if (meta is not null && TryReadChunk(file, meta, out var chunk)
                && ParquetPages.TryDecode(chunk, (int)meta.Codec, rows, field.MaxDefinitionLevel, texts))
                return new Group(g, file.Reader.RowGroupCount, texts, FromPages: true);
            texts.Clear();
            // Any other form, or pages that do not add up: Parquet.Net reads them (or says what is wrong).
            var values = new ReadOnlyMemory<char>[rows];
            int[]? levels = field.MaxDefinitionLevel > 0 ? new int[rows] : null;
            group.ReadRawAsync(field, values.AsMemory(), levels is null ? (Memory<int>?)null : levels, null, cancellation).AsTask().GetAwaiter().GetResult();
            // Definition levels below the maximum are rows without text (null): ReadRawAsync packs only the texts there are.
            int count = levels is null ? (int)rows : levels.Count(level => level == field.MaxDefinitionLevel);
            byte[] utf8 = [];
            foreach (var text in values.AsSpan(0, count))
            {
                int needed = Encoding.UTF8.GetMaxByteCount(text.Length);
                if (utf8.Length < needed) utf8 = new byte[Math.Max(needed, 2 * utf8.Length)];
                texts.Add(utf8.AsSpan(0, Encoding.UTF8.GetBytes(text.Span, utf8)));
            }
            return new Group(g, file.Reader.RowGroupCount, texts, FromPages: false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or NotSupportedException or ArgumentException or IndexOutOfRangeException)
        {
            throw new InvalidDataException($"{name}: row group {g} cannot be read ({e.Message}).");
        }
    }

    /// <summary>The bytes of a column chunk as stored (page headers and pages), or false where the metadata does not fit the file.</summary>
    private static bool TryReadChunk(OpenFile file, Parquet.Meta.ColumnMetaData meta, out ReadOnlySpan<byte> chunk)
    {
        chunk = default;
        long start = meta.DictionaryPageOffset is > 0 and long dictionary && dictionary < meta.DataPageOffset ? dictionary : meta.DataPageOffset;
        long size = meta.TotalCompressedSize;
        if (start < 4 || size <= 0 || size > Array.MaxLength || start > file.Length - size) return false;
        if (file.Chunk.Length < size) file.Chunk = new byte[Math.Max(size, 2L * file.Chunk.Length)];
        file.Stream.Seek(start, SeekOrigin.Begin);
        file.Stream.ReadExactly(file.Chunk, 0, (int)size);
        chunk = file.Chunk.AsSpan(0, (int)size);
        return true;
    }

    private sealed class OpenFile(Stream stream, Parquet.ParquetReader reader) : IDisposable
    {
        public Parquet.ParquetReader Reader { get; } = reader;
        public Stream Stream { get; } = stream;
        public long Length { get; } = stream.Length;

        /// <summary>The last column chunk read, as stored (reused from row group to row group).</summary>
        public byte[] Chunk = [];

        public void Dispose()
        {
            try { Reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            finally { stream.Dispose(); }
        }
    }

    private static OpenFile Open(string name, string path, string column, CancellationToken cancellation, out Parquet.Schema.DataField field)
    {
        var stream = new SynchronousReadStream(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16));
        Parquet.ParquetReader reader;
        try
        {
            reader = Parquet.ParquetReader.CreateAsync(stream, cancellationToken: cancellation).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or NotSupportedException or ArgumentException)
        {
            stream.Dispose();
            throw new InvalidDataException($"{name}: not a readable Parquet file ({e.Message}).");
        }
        catch
        {
            stream.Dispose();
            throw;
        }
        var file = new OpenFile(stream, reader);
        try
        {
            var fields = reader.Schema.GetDataFields();
            field = fields.FirstOrDefault(f => f.Name == column)
                ?? throw new InvalidDataException($"{name}: no column \"{column}\" (columns: {string.Join(", ", fields.Select(f => f.Name))}; use CorpusReadOptions.TextColumn to name the one that holds the text).");
            if (field.ClrType != typeof(string) && field.ClrType != typeof(ReadOnlyMemory<char>) || field.IsArray || field.MaxRepetitionLevel > 0)
                throw new InvalidDataException($"{name}: column \"{column}\" holds {field.ClrType.Name}{(field.IsArray || field.MaxRepetitionLevel > 0 ? " lists" : "")}, not text.");
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}
