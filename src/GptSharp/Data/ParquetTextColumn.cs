using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Text;
using GptSharp.IO;
using GptSharp.Tensors;

namespace GptSharp.Data;

/// <summary>
/// The text column of a Parquet file, row group after row group in order, read ahead on <see cref="Decoders"/> threads of
/// their own (each with its own file handle and Parquet.Net reader, taking every n-th row group), while the caller hands
/// the previous groups on. A row group whose pages <see cref="ParquetPages"/> decodes is only planned there (its column
/// chunk read as stored, its page headers checked, its dictionary decoded): its pages go on in batches
/// (<see cref="ParquetPageBatch"/>) to be decompressed and decoded by whoever tokenizes them. Any other form is decoded
/// by Parquet.Net on the reading thread into UTF-8 texts. Memory: at most two row groups per decoder plus the one being
/// handed on, each its column chunk as stored (or, from Parquet.Net, its texts as UTF-8).
/// </summary>
internal static class ParquetTextColumn
{
    /// <summary>
    /// One row group in row order: its texts (non-null, valid UTF-8: an invalid byte becomes U+FFFD, as Parquet.Net decodes
    /// it) from Parquet.Net, or its page <see cref="Batches"/> with their <see cref="Chunk"/> as stored (rented: <see cref="Return"/>).
    /// </summary>
    internal sealed record Group(int Index, int GroupCount, TextGroupBuilder? Texts, byte[]? Chunk, List<ParquetPageBatch> Batches)
    {
        public bool FromPages => Texts is null;

        public void Return()
        {
            if (Chunk is not null) ArrayPool<byte>.Shared.Return(Chunk);
        }
    }

    /// <summary>Decompressed bytes of a batch of pages: a unit of the corpus encoder's work.</summary>
    private const int BatchBytes = CorpusEncoder.UnitBytes;

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
                try
                {
                    consume(group!);
                }
                finally
                {
                    group!.Return();
                }
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
                    group = DecodeGroup(name, path, column, file, field, g, cancellation);
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

    private static Group DecodeGroup(string name, string path, string column, OpenFile file, Parquet.Schema.DataField field, int g, CancellationToken cancellation)
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
            var batches = new List<ParquetPageBatch>();
            if (meta is not null && TryReadChunk(file, meta, out byte[]? chunk, out int size))
            {
                if (ParquetPages.TryPlan(chunk.AsSpan(0, size), (int)meta.Codec, rows, field.MaxDefinitionLevel, BatchBytes, name, path, column, g, batches))
                    return new Group(g, file.Reader.RowGroupCount, null, chunk, batches);
                ArrayPool<byte>.Shared.Return(chunk);
            }
            // Any other form: Parquet.Net reads it (or says what is wrong).
            var texts = new TextGroupBuilder((int)Math.Clamp(meta?.TotalUncompressedSize ?? 0, 1 << 16, 64 << 20));
            ReadTexts(group, field, rows, 0, rows, texts, cancellation);
            return new Group(g, file.Reader.RowGroupCount, texts, null, []);
        }
        catch (Exception e) when (IsReadError(e))
        {
            throw new InvalidDataException($"{name}: row group {g} cannot be read ({e.Message}).");
        }
    }

    private static bool IsReadError(Exception e) =>
        e is IOException or InvalidOperationException or NotSupportedException or ArgumentException or IndexOutOfRangeException;

    /// <summary>
    /// The texts of <paramref name="batch"/>'s rows read by Parquet.Net: for pages <see cref="ParquetPages.TryDecode"/> could not
    /// decode (corrupt, most likely: then Parquet.Net says what is wrong, as one <see cref="InvalidDataException"/> naming the file).
    /// </summary>
    internal static TextGroupBuilder ReadBatch(ParquetPageBatch batch, CancellationToken cancellation = default)
    {
        try
        {
            using var file = Open(batch.Name, batch.Path, batch.Column, cancellation, out var field);
            using var group = file.Reader.OpenRowGroupReader(batch.RowGroup);
            var texts = new TextGroupBuilder(1 << 16);
            ReadTexts(group, field, group.RowCount, batch.FirstRow, batch.Rows, texts, cancellation);
            return texts;
        }
        catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException) && !e.Message.StartsWith(batch.Name, StringComparison.Ordinal))
        {
            // Parquet.Net reports a corrupt file with exceptions of its own (Thrift, index, overflow...): one line naming the file.
            throw new InvalidDataException($"{batch.Name}: row group {batch.RowGroup} cannot be read ({e.Message}).");
        }
    }

    /// <summary>Parquet.Net's reading of a row group's texts, keeping the non-null ones of rows [first, first + count).</summary>
    private static void ReadTexts(Parquet.ParquetRowGroupReader group, Parquet.Schema.DataField field, long rows, long first, long count,
        TextGroupBuilder texts, CancellationToken cancellation)
    {
        if (rows < 0 || rows > Array.MaxLength || first < 0 || count < 0 || first + count > rows)
            throw new InvalidOperationException($"rows {first} to {first + count} of {rows} asked for");
        var values = new ReadOnlyMemory<char>[rows];
        int[]? levels = field.MaxDefinitionLevel > 0 ? new int[rows] : null;
        group.ReadRawAsync(field, values.AsMemory(), levels is null ? (Memory<int>?)null : levels, null, cancellation).AsTask().GetAwaiter().GetResult();
        // Definition levels below the maximum are rows without text (null): ReadRawAsync packs only the texts there are.
        int skip = levels is null ? (int)first : levels.AsSpan(0, (int)first).Count(field.MaxDefinitionLevel);
        int take = levels is null ? (int)count : levels.AsSpan((int)first, (int)count).Count(field.MaxDefinitionLevel);
        byte[] utf8 = [];
        foreach (var text in values.AsSpan(skip, take))
        {
            int needed = Encoding.UTF8.GetMaxByteCount(text.Length);
            if (utf8.Length < needed) utf8 = new byte[Math.Max(needed, 2 * utf8.Length)];
            texts.Add(utf8.AsSpan(0, Encoding.UTF8.GetBytes(text.Span, utf8)));
        }
    }

    /// <summary>The bytes of a column chunk as stored (page headers and pages, in a rented array), or false where the metadata does not fit the file.</summary>
    private static bool TryReadChunk(OpenFile file, Parquet.Meta.ColumnMetaData meta, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out byte[]? chunk, out int size)
    {
        chunk = null;
        size = 0;
        long start = meta.DictionaryPageOffset is > 0 and long dictionary && dictionary < meta.DataPageOffset ? dictionary : meta.DataPageOffset;
        long length = meta.TotalCompressedSize;
        if (start < 4 || length <= 0 || length > Array.MaxLength || start > file.Length - length) return false;
        size = (int)length;
        chunk = ArrayPool<byte>.Shared.Rent(size);
        file.Stream.Seek(start, SeekOrigin.Begin);
        file.Stream.ReadExactly(chunk, 0, size);
        return true;
    }

    private sealed class OpenFile(Stream stream, Parquet.ParquetReader reader) : IDisposable
    {
        public Parquet.ParquetReader Reader { get; } = reader;
        public Stream Stream { get; } = stream;
        public long Length { get; } = stream.Length;

        public void Dispose()
        {
            try { Reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            finally { Stream.Dispose(); }
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
