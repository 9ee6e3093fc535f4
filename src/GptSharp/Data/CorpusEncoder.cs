using System.Buffers;
using System.Collections.Concurrent;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Data;

/// <summary>How far a corpus has been read and encoded.</summary>
/// <param name="BytesRead">Bytes of the input files read so far, as stored (compressed files count their compressed bytes).</param>
/// <param name="TotalBytes">Bytes of all input files, as stored.</param>
public readonly record struct CorpusProgress(long BytesRead, long TotalBytes, long Tokens, long Documents, int FilesDone, int Files, TimeSpan Elapsed)
{
    public double TokensPerSecond => Elapsed.TotalSeconds > 0 ? Tokens / Elapsed.TotalSeconds : 0;
    public double MegabytesPerSecond => Elapsed.TotalSeconds > 0 ? BytesRead / 1e6 / Elapsed.TotalSeconds : 0;

    /// <summary>Time left at the rate so far, or null before anything was read.</summary>
    public TimeSpan? Remaining => BytesRead > 0 && TotalBytes >= BytesRead ? Elapsed * ((double)(TotalBytes - BytesRead) / BytesRead) : null;
}

/// <summary>
/// Reads the documents of a corpus (<see cref="DocumentReader"/>, on its own thread) and encodes them on all
/// <see cref="Workers"/>, in order: <c>&lt;|endoftext|&gt;</c> before every document, then its ids.
/// <para>
/// The reader packs text into units of about <see cref="UnitBytes"/> (small documents together; a big one cut where the
/// tokenizer may cut, <see cref="Gpt2Tokenizer.ChunkBounds"/>), and each unit is encoded alone. Units depend only on the text,
/// never on the thread count, and every cut is one the tokenizer would make anyway, so the ids are the same for any number
/// of threads. Parquet pages go into units as stored (up to about a unit of text once decompressed, or one bigger page) and
/// are decompressed and decoded by the worker that tokenizes them. Memory is bounded: at most
/// <see cref="QueuedUnitsPerWorker"/> + <see cref="RoundUnitsPerWorker"/> units per worker are alive (text plus ids, about
/// 2.3 MB each, more for a Parquet page bigger than a unit), plus what the reader holds (one block of a text file, one
/// JSON line, a few Parquet column chunks as stored): nothing grows with the size of the corpus.
/// </para>
/// </summary>
internal sealed class CorpusEncoder
{
    internal const int UnitBytes = 1 << 20;
    internal const int QueuedUnitsPerWorker = 2;
    internal const int RoundUnitsPerWorker = 2;

    private readonly IReadOnlyList<CorpusFile> _files;
    private readonly CorpusReadOptions _options;
    private readonly bool _endOfTextAllowed;
    private long _bytesRead, _documents;
    private int _filesDone;

    /// <param name="endOfTextAllowed">True: <c>&lt;|endoftext|&gt;</c> written in a document is the special token (GptSharp's
    /// <c>prepare</c>, as the book's <c>allowed_special</c>); false: it is plain text (llm.c's <c>encode_ordinary</c>).</param>
    public CorpusEncoder(IReadOnlyList<CorpusFile> files, CorpusReadOptions options, bool endOfTextAllowed)
    {
        foreach (var file in files)
            if (file.Format == DocumentFormat.Tokens) throw new ArgumentException($"{file.Path}: already token ids, not text to encode.");
        _files = files;
        _options = options.Validate();
        _endOfTextAllowed = endOfTextAllowed;
        TotalBytes = files.Sum(f => new FileInfo(f.Path).Length);
    }

    public long TotalBytes { get; }
    public long Tokens { get; private set; }

    public CorpusProgress Progress(TimeSpan elapsed) =>
        new(Interlocked.Read(ref _bytesRead), TotalBytes, Tokens, Interlocked.Read(ref _documents), Volatile.Read(ref _filesDone), _files.Count, elapsed);

    /// <summary>
    /// The ids of the whole corpus in order, a unit at a time; each piece is valid until the next one is asked for.
    /// An unreadable file stops the enumeration with its <see cref="InvalidDataException"/>.
    /// </summary>
    public IEnumerable<ReadOnlyMemory<int>> Encode(CancellationToken cancellation = default)
    {
        int workers = Workers.Count;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        using var queue = new BlockingCollection<Unit>(QueuedUnitsPerWorker * workers);
        var reader = Task.Factory.StartNew(() => ReadAll(queue, stop.Token), stop.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        var round = new List<Unit>();
        // One list per unit of a round, kept from round to round: a unit of big Parquet pages has millions of ids, and a new
        // buffer that size every round would cost page faults (kernel time) on a fresh block of memory each time.
        var ids = new IdList[RoundUnitsPerWorker * workers];
        for (int i = 0; i < ids.Length; i++) ids[i] = new IdList(UnitBytes / 3 + 16);
        var tokenizer = Gpt2Tokenizer.Instance;
        try
        {
            while (true)
            {
                round.Clear();
                while (round.Count < ids.Length && queue.TryTake(out var unit, Timeout.Infinite, stop.Token)) round.Add(unit);
                if (round.Count == 0) break;
                Workers.Run(round.Count, i =>
                {
                    var unit = round[i];
                    var list = ids[i];
                    list.Clear();
                    byte[] scratch = [];
                    try
                    {
                        foreach (var segment in unit.Segments)
                        {
                            ReadOnlySpan<byte> text = unit.Text.AsSpan(segment.Start, segment.Length);
                            if (segment.Pages is not null)
                            {
                                // Decompressed and decoded here, each text tokenized straight out of its page.
                                var pages = new PageTexts(tokenizer, _endOfTextAllowed, list);
                                try
                                {
                                    DocumentReader.ParquetTexts(segment.Pages, text, pages);
                                }
                                finally
                                {
                                    list = pages.Ids;
                                }
                                Interlocked.Add(ref _documents, pages.Documents);
                                continue;
                            }
                            if (segment.JsonLine > 0)
                            {
                                // Parsed here, on the workers, not on the reading thread.
                                if (!DocumentReader.JsonText(text, segment.JsonLine, _files[segment.File].Path, _options.TextField, ref scratch, out text)) continue;
                                Interlocked.Increment(ref _documents);
                            }
                            if (segment.StartsDocument) list.Add(Gpt2Tokenizer.EndOfTextId);
                            tokenizer.AppendValidUtf8(text, _endOfTextAllowed, ref list);
                        }
                    }
                    finally
                    {
                        ids[i] = list; // grown, perhaps: the list owns the new buffer, and the slot keeps it
                    }
                });
                for (int i = 0; i < round.Count; i++)
                {
                    Tokens += ids[i].Count;
                    yield return ids[i].AsMemory();
                    round[i].Return();
                }
            }
            reader.GetAwaiter().GetResult(); // the reader's error, if it stopped on one
        }
        finally
        {
            stop.Cancel();
            try { reader.Wait(); } catch (AggregateException) { } // an error already on its way up, or the cancellation
            for (int i = 0; i < ids.Length; i++) ids[i].Dispose();
            foreach (var unit in round) unit.Return();
            while (queue.TryTake(out var left)) left.Return();
        }
    }

    private void ReadAll(BlockingCollection<Unit> queue, CancellationToken cancellation)
    {
        try
        {
            var packer = new UnitPacker(this, queue, cancellation);
            long before = 0;
            for (int f = 0; f < _files.Count; f++)
            {
                var file = _files[f];
                (packer.FileStart, packer.File) = (before, f);
                DocumentReader.Read(file, _options, packer, cancellation);
                before += new FileInfo(file.Path).Length;
                Interlocked.Exchange(ref _bytesRead, before);
                Interlocked.Increment(ref _filesDone);
            }
            packer.Flush();
        }
        finally
        {
            queue.CompleteAdding();
        }
    }

    /// <summary>
    /// Text in a unit: a document's start or more of it, a JSON line (<see cref="JsonLine"/> its 1-based number) to parse
    /// first, or Parquet data pages as stored (<see cref="Pages"/>) to decompress and decode first.
    /// </summary>
    private readonly record struct Segment(int Start, int Length, bool StartsDocument, long JsonLine, int File, ParquetPageBatch? Pages = null);

    /// <summary>Text of one or more documents (or part of one), encoded as a whole by one worker.</summary>
    private sealed class Unit(int capacity)
    {
        public byte[] Text { get; } = ArrayPool<byte>.Shared.Rent(capacity);
        public int Length;

        /// <summary>Bytes of text once decoded (Parquet pages are handed on compressed).</summary>
        public long Weight;
        public readonly List<Segment> Segments = [];

        private bool _returned;

        /// <summary>Gives the text buffer back to the pool, once: a consumer that stops mid-round leaves units already given
        /// back in the round, and the clean-up returns the round whole (a second return would hand one array to two renters).</summary>
        public void Return()
        {
            if (_returned) return;
            _returned = true;
            ArrayPool<byte>.Shared.Return(Text);
        }
    }

    /// <summary>A worker's sink for the texts of Parquet pages: <c>&lt;|endoftext|&gt;</c> and the ids of each.</summary>
    private sealed class PageTexts(Gpt2Tokenizer tokenizer, bool endOfTextAllowed, IdList ids) : IUtf8Texts
    {
        public IdList Ids = ids;
        public long Documents;

        public void Add(ReadOnlySpan<byte> utf8)
        {
            Ids.Add(Gpt2Tokenizer.EndOfTextId);
            tokenizer.AppendValidUtf8(utf8, endOfTextAllowed, ref Ids);
            Documents++;
        }
    }

    /// <summary>The reader's sink: packs what it reads into units and queues them (waiting while the queue is full).</summary>
    private sealed class UnitPacker(CorpusEncoder owner, BlockingCollection<Unit> queue, CancellationToken cancellation) : IDocumentSink
    {
        private Unit? _unit;
        public long FileStart;
        public int File;

        public void AddJsonLine(ReadOnlySpan<byte> line, long number) => AddPiece(line, startsDocument: true, number);

        public void AddParquetPages(ParquetPageBatch batch, ReadOnlySpan<byte> stored) => AddPiece(stored, startsDocument: false, 0, batch);

        public void Add(ReadOnlySpan<byte> utf8, bool startsDocument)
        {
            if (startsDocument) Interlocked.Increment(ref owner._documents);
            if (utf8.Length <= UnitBytes)
            {
                AddPiece(utf8, startsDocument, 0);
                return;
            }
            // A document bigger than a unit: cut where the ids do not change, so that several workers share it.
            var bounds = Gpt2Tokenizer.ChunkBounds(utf8, UnitBytes);
            for (int i = 0; i + 1 < bounds.Count; i++) AddPiece(utf8[bounds[i]..bounds[i + 1]], startsDocument && i == 0, 0);
        }

        public void FileBytesRead(long bytes) => Interlocked.Exchange(ref owner._bytesRead, FileStart + bytes);

        private void AddPiece(ReadOnlySpan<byte> utf8, bool startsDocument, long jsonLine, ParquetPageBatch? pages = null)
        {
            long weight = pages?.TextBytes ?? utf8.Length;
            if (_unit is not null && (_unit.Length + utf8.Length > _unit.Text.Length || _unit.Weight + weight > Math.Max(UnitBytes, _unit.Text.Length))) Flush();
            _unit ??= new Unit(Math.Max(UnitBytes, utf8.Length));
            utf8.CopyTo(_unit.Text.AsSpan(_unit.Length));
            _unit.Segments.Add(new Segment(_unit.Length, utf8.Length, startsDocument, jsonLine, File, pages));
            _unit.Length += utf8.Length;
            _unit.Weight += weight;
        }

        public void Flush()
        {
            if (_unit is null) return;
            var unit = _unit;
            _unit = null;
            try
            {
                queue.Add(unit, cancellation);
            }
            catch
            {
                unit.Return();
                throw;
            }
        }
    }
}
