using System.Globalization;
using System.Text.RegularExpressions;
using GptSharp.IO;
using GptSharp.Tokenization;

namespace GptSharp.Data;

/// <summary>The token files <see cref="CorpusPreparation"/> writes.</summary>
public enum PreparedFormat
{
    /// <summary>One GptSharp token file (<see cref="TokenFile"/>): documents joined with <c>&lt;|endoftext|&gt;</c> (the book's way).</summary>
    GptSharp,

    /// <summary>
    /// llm.c shards of <see cref="PreparationOptions.ShardTokens"/> tokens, named and filled as llm.c's <c>dev/data/fineweb.py</c>
    /// does: <c>&lt;|endoftext|&gt;</c> before every document, text encoded with <c>encode_ordinary</c>, shard 0 is
    /// <c>PREFIX_val_000000.bin</c>, the others <c>PREFIX_train_NNNNNN.bin</c>, a document running on into the next shard.
    /// </summary>
    Llmc,
}

/// <summary>What <see cref="CorpusPreparation.Prepare"/> reads and writes.</summary>
public sealed record PreparationOptions
{
    public CorpusReadOptions Read { get; init; } = new();
    public PreparedFormat Format { get; init; } = PreparedFormat.GptSharp;

    /// <summary>Tokens per llm.c shard (fineweb.py's default is 10^8).</summary>
    public long ShardTokens { get; init; } = 100_000_000;

    public PreparationOptions Validate()
    {
        Read.Validate();
        if (ShardTokens is <= 0 or > int.MaxValue) throw new ArgumentException($"PreparationOptions.ShardTokens must be between 1 and {int.MaxValue} (llm.c counts in an int32), got {ShardTokens}.");
        return this;
    }
}

/// <summary>What a preparation wrote.</summary>
public sealed record PreparationResult(IReadOnlyList<string> Outputs, long Tokens, CorpusProgress Progress);

/// <summary>
/// <c>gptsharp prepare</c>: encodes a corpus of text files in any <see cref="DocumentFormat"/> once, streaming, on all cores
/// (<see cref="CorpusEncoder"/>), into token files that training maps into memory. Every file is written atomically;
/// the output is the same for any number of threads.
/// </summary>
public static class CorpusPreparation
{
    /// <param name="files">The corpus, in order (<see cref="TextCorpus.ResolveFiles"/>).</param>
    /// <param name="output">The token file; for llm.c shards the path prefix (a trailing <c>.bin</c> is dropped).</param>
    /// <param name="progress">Called from the preparing thread after every round of units (a few times a second).</param>
    public static PreparationResult Prepare(IReadOnlyList<string> files, string output, PreparationOptions? options = null,
        Action<CorpusProgress>? progress = null, CancellationToken cancellation = default)
    {
        options = (options ?? new PreparationOptions()).Validate();
        var corpus = files.Select(CorpusFile.Classify).ToList();
        var encoder = new CorpusEncoder(corpus, options.Read, endOfTextAllowed: options.Format == PreparedFormat.GptSharp);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        IEnumerable<ReadOnlyMemory<int>> Units()
        {
            foreach (var ids in encoder.Encode(cancellation))
            {
                yield return ids;
                progress?.Invoke(encoder.Progress(clock.Elapsed));
            }
        }
        var (outputs, tokens) = options.Format == PreparedFormat.GptSharp
            ? WriteTokenFile(output, files, Units())
            : WriteLlmcShards(output, options.ShardTokens, Units());
        return new PreparationResult(outputs, tokens, encoder.Progress(clock.Elapsed));
    }

    private static (IReadOnlyList<string>, long) WriteTokenFile(string path, IReadOnlyList<string> sources, IEnumerable<ReadOnlyMemory<int>> units)
    {
        var header = TokenFile.Write(path, Gpt2Tokenizer.VocabSize, Gpt2Tokenizer.EndOfTextId, sources, write =>
        {
            bool first = true;
            foreach (var ids in units)
            {
                // The encoder puts <|endoftext|> before every document; the book joins them, so the first one goes.
                var span = ids.Span;
                if (first && span.Length > 0)
                {
                    span = span[1..];
                    first = false;
                }
                write(span, path);
            }
        });
        return ([path], header.Count);
    }

    /// <summary>The llm.c name of shard <paramref name="index"/>: the first is the validation shard.</summary>
    public static string LlmcShardPath(string prefix, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"{LlmcPrefix(prefix)}_{(index == 0 ? "val" : "train")}_{index:D6}.bin");

    private static string LlmcPrefix(string prefix) =>
        prefix.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) ? prefix[..^4] : prefix;

    private static (IReadOnlyList<string>, long) WriteLlmcShards(string prefix, long shardTokens, IEnumerable<ReadOnlyMemory<int>> units)
    {
        long total = 0;
        string? directory = Path.GetDirectoryName(Path.GetFullPath(LlmcPrefix(prefix)));
        Directory.CreateDirectory(directory!);
        var written = new List<string>();
        using var e = units.GetEnumerator();
        ReadOnlyMemory<int> pending = default;
        bool Next()
        {
            while (pending.IsEmpty)
            {
                if (!e.MoveNext()) return false;
                pending = e.Current;
            }
            return true;
        }
        while (Next())
        {
            string path = LlmcShardPath(prefix, written.Count);
            AtomicFile.Write(path, stream =>
            {
                stream.Write(new byte[TokenShard.LlmcHeaderBytes]); // the count is known at the end
                var writer = new UInt16IdWriter(stream, Gpt2Tokenizer.VocabSize);
                while (writer.Count < shardTokens && Next())
                {
                    int take = (int)Math.Min(pending.Length, shardTokens - writer.Count);
                    writer.Write(pending.Span[..take], path);
                    pending = pending[take..];
                }
                stream.Position = 0;
                stream.Write(TokenShard.LlmcHeader(writer.Count));
                total += writer.Count;
            });
            written.Add(path);
        }
        RemoveStaleShards(prefix, written.Count);
        return (written, total);
    }

    /// <summary>Shards of an earlier, longer preparation with the same prefix would join a <c>*_train_*.bin</c> glob: they go.</summary>
    private static void RemoveStaleShards(string prefix, int count)
    {
        string full = Path.GetFullPath(LlmcPrefix(prefix));
        string directory = Path.GetDirectoryName(full)!, name = Path.GetFileName(full);
        var pattern = new Regex($"^{Regex.Escape(name)}_(val|train)_(\\d{{6}})\\.bin$", RegexOptions.CultureInvariant);
        foreach (string file in Directory.EnumerateFiles(directory, name + "_*.bin"))
        {
            var match = pattern.Match(Path.GetFileName(file));
            if (match.Success && int.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture) >= count) AtomicFile.Delete(file);
        }
    }
}
