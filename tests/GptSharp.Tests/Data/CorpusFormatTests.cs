using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using Parquet;
using Parquet.Schema;

namespace GptSharp.Tests.Data;

/// <summary>
/// Corpora in every form (text, JSON Lines, Parquet, gzip, zstd, mixed) prepared by the streaming encoder give the ids of
/// the book's way (documents joined with &lt;|endoftext|&gt;, encoded whole), for any thread count; llm.c shards are
/// byte-exact to data_common.py's layout; token files of every format are read back with checked headers.
/// </summary>
public sealed class CorpusFormatTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-corpus-" + Guid.NewGuid().ToString("N"));

    public CorpusFormatTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly Gpt2Tokenizer Tokenizer = Gpt2Tokenizer.Instance;

    /// <summary>Documents with what trips readers up: escapes, quotes, new lines, non-ASCII, tabs, an empty one, a literal end-of-text.</summary>
    private static readonly string[] Documents =
    [
        "I HAD always thought Jack Gisburn rather a cheap genius.",
        "Line one\nline two\r\n\ttabbed \"quoted\" back\\slash",
        "Café, naïve, 日本語, emoji 🙂 and more",
        "",
        "A document that mentions <|endoftext|> inside it.",
        "   leading spaces and trailing   ",
    ];

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static int[] BookIds(IEnumerable<string> documents) =>
        Tokenizer.Encode(string.Join("<|endoftext|>", documents), Gpt2Tokenizer.AllSpecialTokens);

    private static int[] ReadIds(string tokenFile)
    {
        using var shard = TokenShard.Open(tokenFile);
        var ids = new int[shard.Count];
        shard.CopyTo(0, ids);
        return ids;
    }

    private int[] Prepare(IReadOnlyList<string> files, PreparationOptions? options = null)
    {
        string output = PathOf($"out-{Guid.NewGuid():N}.bin");
        CorpusPreparation.Prepare(files, output, options);
        return ReadIds(output);
    }

    private void WriteJsonLines(string path, IEnumerable<string?> texts, string field = "text")
    {
        using var file = File.Create(path);
        using Stream stream = path.EndsWith(".gz") ? new GZipStream(file, CompressionLevel.Fastest)
            : path.EndsWith(".zst") ? new ZstdSharp.CompressionStream(file) : file;
        int id = 0;
        foreach (string? text in texts)
        {
            // Another field before and after the text, one nested, so the reader has to skip values.
            string line = $"{{\"id\":{id++},\"meta\":{{\"text\":\"not this\",\"list\":[1,2]}},{JsonSerializer.Serialize(field)}:{(text is null ? "null" : JsonSerializer.Serialize(text))},\"url\":\"x\"}}\n";
            stream.Write(Encoding.UTF8.GetBytes(line));
        }
    }

    private static void WriteParquet(string path, IReadOnlyList<string?> texts, int rowsPerGroup, string column = "text")
    {
        var text = new DataField<string>(column);
        var id = new DataField<int>("id");
        using var file = File.Create(path);
        var writer = ParquetWriter.CreateAsync(new ParquetSchema(id, text), file).GetAwaiter().GetResult();
        {
            for (int start = 0; start < texts.Count; start += rowsPerGroup)
            {
                var rows = texts.Skip(start).Take(rowsPerGroup).ToArray();
                using var group = writer.CreateRowGroup();
                group.WriteAsync<int>(id, Enumerable.Range(start, rows.Length).ToArray(), null).GetAwaiter().GetResult();
                group.WriteAsync(text, rows!, null).GetAwaiter().GetResult();
            }
            writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private static void Compress(string from, string to)
    {
        using var source = File.OpenRead(from);
        using var file = File.Create(to);
        using Stream target = to.EndsWith(".gz") ? new GZipStream(file, CompressionLevel.Fastest) : new ZstdSharp.CompressionStream(file);
        source.CopyTo(target);
    }

    [Fact]
    public void AConsumerThatStopsMidRoundGivesEachBufferBackOnce()
    {
        // Several 1 MiB units per round; stopping at the second piece leaves the first unit already returned in the round.
        string path = PathOf("stop.txt");
        var random = new Random(5);
        File.WriteAllText(path, string.Concat(Enumerable.Range(0, 200_000).Select(i => $"line {i} of {random.Next()} words.\n")));
        var encoder = new CorpusEncoder([CorpusFile.Classify(path)], new CorpusReadOptions(), endOfTextAllowed: true);
        int pieces = 0;
        foreach (var piece in encoder.Encode())
        {
            Assert.True(piece.Length > 0);
            if (++pieces == 2) break;
        }
        Assert.Equal(2, pieces);
        // A buffer returned twice would be handed to two renters at once.
        var rented = Enumerable.Range(0, 16).Select(_ => System.Buffers.ArrayPool<byte>.Shared.Rent(CorpusEncoder.UnitBytes)).ToList();
        Assert.Equal(rented.Count, rented.Distinct(ReferenceEqualityComparer.Instance).Count());
        foreach (var array in rented) System.Buffers.ArrayPool<byte>.Shared.Return(array);
    }

    [Fact]
    public void EveryFormatGivesTheIdsOfTheDocumentsJoinedWithEndOfText()
    {
        int[] expected = BookIds(Documents.Where(d => d.Length > 0)); // a .txt file cannot be empty, so the text side has no empty document
        var texts = new List<string>();
        for (int i = 0, n = 0; i < Documents.Length; i++)
            if (Documents[i].Length > 0) File.WriteAllText(PathOf($"t{n++}.txt"), Documents[i]);
        for (int i = 0; i < 5; i++) texts.Add(PathOf($"t{i}.txt"));
        Assert.Equal(expected, Prepare(texts));

        // Records: every one is a document, the empty one too; a null record has no text and is left out.
        int[] withEmpty = BookIds(Documents);
        var records = Documents.Cast<string?>().Prepend(null).ToList();
        foreach (string name in new[] { "docs.jsonl", "docs.json", "docs.jsonl.gz", "docs.jsonl.zst" })
        {
            WriteJsonLines(PathOf(name), records);
            Assert.Equal(withEmpty, Prepare([PathOf(name)]));
        }
        WriteParquet(PathOf("docs.parquet"), records, rowsPerGroup: 2); // four row groups
        Assert.Equal(withEmpty, Prepare([PathOf("docs.parquet")]));
        Compress(PathOf("docs.parquet"), PathOf("docs.parquet.zst"));
        Compress(PathOf("t0.txt"), PathOf("t0.txt.gz"));
        Assert.Equal(withEmpty, Prepare([PathOf("docs.parquet.zst")]));
        Assert.Equal(BookIds([Documents[0]]), Prepare([PathOf("t0.txt.gz")]));

        // Mixed in one glob, in name order, compressed or not.
        var mixed = TextCorpus.ResolveFiles(Path.Combine(_dir, "docs.*"));
        Assert.Equal(["docs.json", "docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst", "docs.parquet", "docs.parquet.zst"], mixed.Select(Path.GetFileName));
        Assert.Equal(BookIds(Enumerable.Repeat(Documents, 6).SelectMany(d => d)), Prepare(mixed));

        // Training straight from text reads the same documents the same way.
        Assert.Equal(string.Join("<|endoftext|>", Documents), TextCorpus.ReadCorpus([PathOf("docs.parquet")]));
    }

    [Fact]
    public void TheFieldAndColumnCanBeNamed()
    {
        WriteJsonLines(PathOf("c.jsonl"), ["one", "two"], field: "content");
        WriteParquet(PathOf("c.parquet"), ["three", "four"], rowsPerGroup: 10, column: "body");
        var options = new PreparationOptions { Read = new CorpusReadOptions { TextField = "content", TextColumn = "body" } };
        Assert.Equal(BookIds(["one", "two", "three", "four"]), Prepare([PathOf("c.jsonl"), PathOf("c.parquet")], options));
        var e = Assert.Throws<InvalidDataException>(() => Prepare([PathOf("c.jsonl")]));
        Assert.Contains("c.jsonl: line 1 has no field \"text\"", e.Message);
        e = Assert.Throws<InvalidDataException>(() => Prepare([PathOf("c.parquet")]));
        Assert.Contains("c.parquet: no column \"text\" (columns: id, body", e.Message);
    }

    [Fact]
    public void BadRecordsAreOneLineNamingTheFileAndPlace()
    {
        File.WriteAllText(PathOf("broken.jsonl"), "{\"text\":\"fine\"}\n\n{\"text\": \"cut\n");
        Assert.Contains("broken.jsonl: line 3 is not valid JSON", Assert.Throws<InvalidDataException>(() => Prepare([PathOf("broken.jsonl")])).Message);
        File.WriteAllText(PathOf("number.jsonl"), "{\"text\":12}\n");
        Assert.Contains("number.jsonl: line 1: field \"text\" is Number, expected a string", Assert.Throws<InvalidDataException>(() => Prepare([PathOf("number.jsonl")])).Message);
        File.WriteAllText(PathOf("array.json"), "[{\"text\":\"a\"},\n{\"text\":\"b\"}]");
        Assert.Contains("array.json: a JSON array, not JSON Lines", Assert.Throws<InvalidDataException>(() => Prepare([PathOf("array.json")])).Message);
        File.WriteAllBytes(PathOf("latin1.txt"), [(byte)'o', (byte)'k', (byte)' ', 0xE9, (byte)'t', (byte)'e']);
        Assert.Contains("latin1.txt: not valid UTF-8 (byte offset 3)", Assert.Throws<InvalidDataException>(() => Prepare([PathOf("latin1.txt")])).Message);
        File.WriteAllText(PathOf("fake.parquet"), "not parquet at all");
        Assert.StartsWith(PathOf("fake.parquet") + ":", Assert.Throws<InvalidDataException>(() => Prepare([PathOf("fake.parquet")])).Message);
        File.WriteAllText(PathOf("fake.jsonl.gz"), "not gzip");
        Assert.StartsWith(PathOf("fake.jsonl.gz") + ":", Assert.Throws<InvalidDataException>(() => Prepare([PathOf("fake.jsonl.gz")])).Message);
        File.WriteAllText(PathOf("notes.md"), "x");
        Assert.Contains("notes.md: unknown corpus file type", Assert.Throws<InvalidDataException>(() => TextCorpus.ResolveFiles(PathOf("notes.*"))).Message);
        // A failed preparation leaves no output behind.
        Assert.Empty(Directory.GetFiles(_dir, "out-*"));
        Assert.Empty(Directory.GetFiles(_dir, ".*.tmp"));
    }

    /// <summary>
    /// Several units of work (a 2.5 MB .txt read in blocks, a long JSON record cut into units, many small records): the ids are
    /// those of the whole text encoded at once, and the file is the same byte for byte on 1 and 3 threads.
    /// </summary>
    [Fact]
    public void OutputIsTheSameForAnyThreadCountAndEqualsEncodingTheWholeText()
    {
        var random = new Random(7);
        string verdict = TextCorpus.TheVerdict();
        string Piece(int length)
        {
            var b = new StringBuilder();
            while (b.Length < length) b.Append(verdict, random.Next(verdict.Length - 200), 1 + random.Next(199)).Append(random.Next(4) == 0 ? "\n\n" : " ");
            return b.ToString();
        }
        string big = Piece(2_500_000) + " 末尾 é";
        File.WriteAllText(PathOf("big.txt"), big);
        var records = Enumerable.Range(0, 300).Select(i => Piece(random.Next(1, 3000))).Append(Piece(1_300_000)).ToList();
        WriteJsonLines(PathOf("many.jsonl"), records);
        string[] files = [PathOf("big.txt"), PathOf("many.jsonl")];
        int[] expected = Tokenizer.Encode(string.Join("<|endoftext|>", records.Prepend(big)), Gpt2Tokenizer.AllSpecialTokens);

        int saved = Workers.Count;
        byte[] one, three;
        try
        {
            Workers.Count = 1;
            CorpusPreparation.Prepare(files, PathOf("one.bin"));
            Workers.Count = 3;
            var result = CorpusPreparation.Prepare(files, PathOf("three.bin"));
            Assert.Equal(expected.Length, result.Tokens);
            Assert.Equal(301 + 1, result.Progress.Documents);
            Assert.Equal(result.Progress.TotalBytes, result.Progress.BytesRead);
        }
        finally
        {
            Workers.Count = saved;
        }
        one = File.ReadAllBytes(PathOf("one.bin"));
        three = File.ReadAllBytes(PathOf("three.bin"));
        Assert.Equal(one, three);
        Assert.Equal(expected, ReadIds(PathOf("one.bin")));
    }

    /// <summary>The layout of llm.c's dev/data/data_common.py write_datafile, written here by hand: 256 int32 then uint16 ids.</summary>
    private static byte[] LlmcFile(ReadOnlySpan<int> ids)
    {
        var bytes = new byte[1024 + 2 * ids.Length];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, 20240520);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), 1);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), ids.Length);
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(1024 + 2 * i), (ushort)ids[i]);
        return bytes;
    }

    [Fact]
    public void LlmcShardsAreByteExactToTheDocumentedLayoutAndReadBack()
    {
        WriteJsonLines(PathOf("docs.jsonl"), Documents);
        // fineweb.py: <|endoftext|> before every document, encode_ordinary (a literal <|endoftext|> is plain text).
        int[] stream = Documents.SelectMany(d => new[] { Gpt2Tokenizer.EndOfTextId }.Concat(Tokenizer.EncodeOrdinary(d))).ToArray();
        const int shardTokens = 16;
        File.WriteAllBytes(PathOf("fw_train_000099.bin"), LlmcFile([1, 2, 3])); // a stale shard of an earlier, longer preparation
        var result = CorpusPreparation.Prepare([PathOf("docs.jsonl")], PathOf("fw"), new PreparationOptions { Format = PreparedFormat.Llmc, ShardTokens = shardTokens });

        int shards = (stream.Length + shardTokens - 1) / shardTokens;
        Assert.Equal(stream.Length, result.Tokens);
        Assert.Equal(Enumerable.Range(0, shards).Select(i => $"fw_{(i == 0 ? "val" : "train")}_{i:D6}.bin"), result.Outputs.Select(Path.GetFileName));
        Assert.False(File.Exists(PathOf("fw_train_000099.bin")));
        for (int i = 0; i < shards; i++)
        {
            var ids = stream.AsSpan(i * shardTokens, Math.Min(shardTokens, stream.Length - i * shardTokens));
            Assert.Equal(LlmcFile(ids), File.ReadAllBytes(result.Outputs[i]));
            using var shard = TokenShard.Open(result.Outputs[i]);
            Assert.Equal(TokenFileFormat.Llmc, shard.Format);
            var back = new int[shard.Count];
            shard.CopyTo(0, back);
            Assert.Equal(ids.ToArray(), back);
        }

        // The train glob reads shards 1.. in order as one run of ids.
        var train = TextCorpus.ResolveFiles(PathOf("fw_train_*.bin"));
        using var all = TokenShards.Open(train);
        var joined = new int[all.Count];
        all.CopyTo(0, joined);
        Assert.Equal(stream[shardTokens..], joined);
    }

    [Fact]
    public void GlobsReadShardsInNameOrderAndLocateIdsInThem()
    {
        foreach (int i in new[] { 10, 2, 1 }) File.WriteAllBytes(PathOf($"d_train_{i:D6}.bin"), LlmcFile(Enumerable.Repeat(i, i).ToArray()));
        var files = TextCorpus.ResolveFiles(PathOf("d_train_*.bin"));
        Assert.Equal(["d_train_000001.bin", "d_train_000002.bin", "d_train_000010.bin"], files.Select(Path.GetFileName));
        using var shards = TokenShards.Open(files);
        Assert.Equal(13, shards.Count);
        var ids = new int[13];
        shards.CopyTo(0, ids);
        Assert.Equal([1, 2, 2, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10], ids);
        Assert.Equal((0, 0L), shards.Locate(0));
        Assert.Equal((1, 1L), shards.Locate(2));
        Assert.Equal((2, 9L), shards.Locate(12));
        var middle = new int[4];
        shards.CopyTo(1, middle); // across a shard boundary
        Assert.Equal([2, 2, 10, 10], middle);
    }

    [Fact]
    public void NanoGptBinsAndGptSharpTokenFilesAreReadToo()
    {
        var bare = new byte[2 * 5];
        for (int i = 0; i < 5; i++) BinaryPrimitives.WriteUInt16LittleEndian(bare.AsSpan(2 * i), (ushort)(50256 - i));
        File.WriteAllBytes(PathOf("train.bin"), bare);
        using (var shard = TokenShard.Open(PathOf("train.bin")))
        {
            Assert.Equal(TokenFileFormat.NanoGpt, shard.Format);
            var ids = new int[5];
            shard.CopyTo(0, ids);
            Assert.Equal([50256, 50255, 50254, 50253, 50252], ids);
        }
        CorpusPreparation.Prepare([WriteText("g.txt", "Hello there")], PathOf("g.tokens"));
        using (var own = TokenShard.Open(PathOf("g.tokens")))
            Assert.Equal(TokenFileFormat.GptSharp, own.Format);
        // A GptSharp token file is taken under any name.
        Assert.Equal([PathOf("g.tokens")], TextCorpus.ResolveFiles(PathOf("g.tokens")));
    }

    private string WriteText(string name, string text)
    {
        File.WriteAllText(PathOf(name), text);
        return PathOf(name);
    }

    [Fact]
    public void BadTokenFileHeadersAreOneErrorNamingTheFile()
    {
        string Write(string name, byte[] bytes)
        {
            File.WriteAllBytes(PathOf(name), bytes);
            return PathOf(name);
        }
        var good = LlmcFile([1, 2, 3]);
        var version = (byte[])good.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(version.AsSpan(4), 2);
        var count = (byte[])good.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(count.AsSpan(8), 4);
        var negative = (byte[])good.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(negative.AsSpan(8), -1);
        var llama = (byte[])good.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(llama, 20240801);
        var cases = new (string File, string Message)[]
        {
            (Write("version.bin", version), "llm.c shard version 2; expected 1"),
            (Write("count.bin", count), "the llm.c header says 4 tokens (1032 bytes with the header) but the file has 1030 bytes"),
            (Write("negative.bin", negative), "the llm.c header says -1 tokens"),
            (Write("cut.bin", good[..(1030 - 1)]), "the llm.c header says 3 tokens"),
            (Write("header.bin", good[..100]), "an llm.c shard cut short inside its header"),
            (Write("llama.bin", llama), "an llm.c Llama 3 shard"),
            (Write("odd.bin", [1, 2, 3]), "3 bytes is not a whole number of uint16 ids"),
            (Write("empty.bin", []), "the token file is empty"),
        };
        foreach (var (file, message) in cases)
        {
            var e = Assert.Throws<InvalidDataException>(() => TokenShard.Open(file).Dispose());
            Assert.StartsWith(file + ": ", e.Message);
            Assert.Contains(message, e.Message);
        }
        // Ids beyond the vocabulary: named with the file, the byte offset and the token's index.
        using var shard = TokenShard.Open(Write("big-id.bin", LlmcFile([5, 60000, 7])));
        var error = Assert.Throws<InvalidDataException>(() => shard.CheckIds(Gpt2Tokenizer.VocabSize));
        Assert.Contains("big-id.bin: token id 60000 at byte offset 1026 (token 1)", error.Message);
        // A glob that mixes text and tokens is refused by training.
        WriteText("x.txt", "some text");
        var mixed = Assert.Throws<ArgumentException>(() => GptSharp.Training.TrainingData.Load(Path.Combine(_dir, "*"), 0.9, Tokenizer).Dispose());
        Assert.Contains("mix token files and text", mixed.Message);
    }
}
