using System.Text;
using GptSharp.Data;
using Parquet;
using Parquet.Schema;

namespace GptSharp.Tests.Data;

/// <summary>
/// The text column read straight from Parquet pages (<see cref="ParquetPages"/>) against Parquet.Net's own string reading,
/// over what a writer varies: codec, PLAIN or dictionary pages, nullable or required, nulls, empty and large texts, row
/// groups decoded on one or several threads. Forms left to Parquet.Net (Brotli, LZ4) give the same texts through it.
/// </summary>
public sealed class ParquetPagesTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-pages-" + Guid.NewGuid().ToString("N"));

    public ParquetPagesTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string?[] Texts(bool repeats, bool nulls)
    {
        var random = new Random(5);
        string[] pool = ["Café 日本 🙂", "", "I HAD always thought Jack Gisburn rather a cheap genius.", "line\nbreak\t\"quoted\"", new string('x', 70_000)];
        var texts = new string?[700];
        for (int i = 0; i < texts.Length; i++)
        {
            if (nulls && i % 7 == 3) continue;
            texts[i] = repeats ? pool[random.Next(pool.Length)] : $"{i} {pool[random.Next(pool.Length)]} {random.Next()}";
        }
        return texts;
    }

    private string Write(string?[] texts, CompressionMethod codec, bool nullable, int rowsPerGroup, bool dictionary = false)
    {
        string path = Path.Combine(_dir, $"{Guid.NewGuid():N}.parquet");
        var text = new DataField("text", typeof(string), isNullable: nullable);
        var id = new DataField<int>("id");
        using var file = File.Create(path);
        var options = new ParquetOptions { CompressionMethod = codec };
        if (dictionary) options.ColumnEncodingHints["text"] = EncodingHint.Dictionary;
        var writer = ParquetWriter.CreateAsync(new ParquetSchema(id, text), file, options).GetAwaiter().GetResult();
        for (int start = 0; start < texts.Length; start += rowsPerGroup)
        {
            var rows = texts.Skip(start).Take(rowsPerGroup).ToArray();
            using var group = writer.CreateRowGroup();
            group.WriteAsync<int>(id, Enumerable.Range(start, rows.Length).ToArray(), null).GetAwaiter().GetResult();
            group.WriteAsync(text, nullable ? rows : rows.Select(r => r ?? "").ToArray(), null).GetAwaiter().GetResult();
        }
        writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return path;
    }

    /// <summary>What Parquet.Net reads: every non-null text of every row group, as UTF-8.</summary>
    private static List<byte[]> Reference(string path)
    {
        using var stream = File.OpenRead(path);
        var reader = ParquetReader.CreateAsync(stream).GetAwaiter().GetResult();
        var field = reader.Schema.GetDataFields().First(f => f.Name == "text");
        var texts = new List<byte[]>();
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            var rows = new string?[group.RowCount];
            group.ReadAsync(field, rows.AsMemory(), null).AsTask().GetAwaiter().GetResult();
            texts.AddRange(rows.Where(r => r is not null).Select(r => Encoding.UTF8.GetBytes(r!)));
        }
        reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return texts;
    }

    private static (List<byte[]> Texts, bool AllFromPages, int Groups) Read(string path, int decoders)
    {
        var texts = new List<byte[]>();
        bool fromPages = true;
        int groups = 0, expectedIndex = 0;
        var collected = new Collected(texts);
        ParquetTextColumn.Read("t.parquet", path, "text", group =>
        {
            Assert.Equal(expectedIndex++, group.Index);
            if (group.Texts is { } decoded)
                for (int i = 0; i < decoded.Count; i++) texts.Add(decoded[i].ToArray());
            // Pages are decoded by whoever takes them (the corpus encoder's workers): here, at once.
            foreach (var batch in group.Batches) DocumentReader.ParquetTexts(batch, group.Chunk.AsSpan(batch.Start, batch.Length), collected);
            fromPages &= group.FromPages;
            groups++;
        }, CancellationToken.None, decoders);
        return (texts, fromPages, groups);
    }

    private sealed class Collected(List<byte[]> texts) : IUtf8Texts
    {
        public void Add(ReadOnlySpan<byte> utf8) => texts.Add(utf8.ToArray());
    }

    [Theory]
    [InlineData(CompressionMethod.None, true)]
    [InlineData(CompressionMethod.Snappy, true)]
    [InlineData(CompressionMethod.Gzip, true)]
    [InlineData(CompressionMethod.Zstd, true)]
    [InlineData(CompressionMethod.Brotli, false)]
    [InlineData(CompressionMethod.LZ4, false)]
    [InlineData(CompressionMethod.Lz4Raw, false)]
    public void PagesGiveParquetNetsTexts(CompressionMethod codec, bool fromPages)
    {
        foreach (bool repeats in new[] { false, true })
        foreach (bool nullable in new[] { false, true })
        {
            string path = Write(Texts(repeats, nulls: nullable), codec, nullable, rowsPerGroup: 150, dictionary: repeats);
            var expected = Reference(path);
            foreach (int decoders in new[] { 1, 3 })
            {
                var (texts, allFromPages, groups) = Read(path, decoders);
                Assert.Equal(5, groups);
                Assert.Equal(expected, texts);
                Assert.Equal(fromPages, allFromPages);
            }
        }
    }

    [Fact]
    public async Task DictionaryPagesAreDecoded()
    {
        // Few distinct texts: a dictionary page and RLE_DICTIONARY indexes (bit-packed and RLE runs), as pyarrow writes text first.
        var texts = Enumerable.Range(0, 1000).Select(i => (string?)(i % 3 == 0 ? null : i < 500 ? $"t{i % 37}" : "same")).ToArray();
        string path = Write(texts, CompressionMethod.Snappy, nullable: true, rowsPerGroup: 1000, dictionary: true);
        using (var stream = File.OpenRead(path))
        {
            var reader = await ParquetReader.CreateAsync(stream);
            using var group = reader.OpenRowGroupReader(0);
            var meta = group.GetMetadata(reader.Schema.GetDataFields().First(f => f.Name == "text"))!.MetaData!;
            Assert.Contains(meta.Encodings, e => e is Parquet.Meta.Encoding.RLE_DICTIONARY or Parquet.Meta.Encoding.PLAIN_DICTIONARY);
            await reader.DisposeAsync();
        }
        var (read, fromPages, _) = Read(path, 1);
        Assert.True(fromPages);
        Assert.Equal(Reference(path), read);
    }

    [Fact]
    public void PagesThatDoNotDecodeAreReadByParquetNet()
    {
        // Each row group's pages handed on with a byte missing: the decoder refuses them, and Parquet.Net reads the batch's
        // rows (nulls among them) again, from the row group's first text.
        string path = Write(Texts(repeats: false, nulls: true), CompressionMethod.Snappy, nullable: true, rowsPerGroup: 150);
        var texts = new List<byte[]>();
        var collected = new Collected(texts);
        int batches = 0;
        ParquetTextColumn.Read("t.parquet", path, "text", group =>
        {
            Assert.True(group.FromPages);
            foreach (var batch in group.Batches)
            {
                DocumentReader.ParquetTexts(batch, group.Chunk.AsSpan(batch.Start, batch.Length - 1), collected);
                batches++;
            }
        }, CancellationToken.None, 1);
        Assert.Equal(5, batches);
        Assert.Equal(Reference(path), texts);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void CorruptPagesAreOneErrorNamingTheFileOnAnyThreadCount(int threads)
    {
        // Bytes in the middle of the text column's Snappy page set to 0xFF (copies from 4 GB back): the workers' decoder
        // refuses the page, and Parquet.Net cannot read it either.
        string path = Write(Texts(repeats: false, nulls: false), CompressionMethod.Snappy, nullable: false, rowsPerGroup: 700);
        byte[] bytes = File.ReadAllBytes(path);
        bytes.AsSpan(bytes.Length / 2, 64).Fill(0xFF);
        File.WriteAllBytes(path, bytes);
        int before = GptSharp.Tensors.Workers.Count;
        GptSharp.Tensors.Workers.Count = threads;
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => CorpusPreparation.Prepare([path], Path.Combine(_dir, "tokens.bin")));
            Assert.StartsWith(path + ":", e.Message);
            Assert.False(File.Exists(Path.Combine(_dir, "tokens.bin")));
        }
        finally
        {
            GptSharp.Tensors.Workers.Count = before;
        }
    }
}
