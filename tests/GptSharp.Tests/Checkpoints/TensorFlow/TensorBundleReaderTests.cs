using System.Buffers.Binary;
using System.Text.Json;
using GptSharp.Formats;
using GptSharp.Formats.TensorFlow;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

public class TensorBundleReaderTests
{
    public static TheoryData<string, string> Fixtures => new()
    {
        { "gpt2-124M", "model.ckpt" },
        { "half_plus_two", "variables" },
        { "half_plus_two_snappy", "variables" },
        { "half_plus_two_mkl", "variables" },
        { "half_plus_two_tf2", "variables" },
    };

    [Fact]
    public void Crc32CMatchesTheCheckValueAndTensorFlowsMask()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0u, Crc32C.Compute([]));
        Assert.Equal(0xa282ead8u, Crc32C.Mask(0));
        Assert.Equal(0x1f273806u, Crc32C.Mask(Crc32C.Compute([0x00, 0x00, 0x00, 0x3f]))); // float 0.5, tensor 'a'
        foreach (uint x in new[] { 0u, 1u, 0xdeadbeefu, 0xffffffffu }) Assert.Equal(x, Crc32C.Unmask(Crc32C.Mask(x)));
        // Chunked updates equal one pass (the data shard is checksummed chunk by chunk).
        var bytes = Enumerable.Range(0, 1000).Select(i => (byte)(i * 7)).ToArray();
        uint state = Crc32C.Update(Crc32C.Update(Crc32C.Initial, bytes.AsSpan(0, 13)), bytes.AsSpan(13));
        Assert.Equal(Crc32C.Compute(bytes), Crc32C.Finish(state));
    }

    [Fact]
    public void SnappyDecodesOverlappingCopiesAndRejectsBadOffsets()
    {
        // "abcd" literal then copy len 8 offset 4 (type 01) then copy len 3 offset 1 (type 10): overlap.
        byte[] stream = [15, 3 << 2, (byte)'a', (byte)'b', (byte)'c', (byte)'d', 0b000_100_01, 4, (2 << 2) | 2, 1, 0];
        Assert.Equal("abcdabcdabcdddd", System.Text.Encoding.ASCII.GetString(Snappy.Decompress(stream, "x")));
        byte[] bad = [8, 3 << 2, (byte)'a', (byte)'b', (byte)'c', (byte)'d', 0b000_000_01, 9];
        Assert.Contains("x: corrupt Snappy block", Assert.Throws<InvalidDataException>(() => Snappy.Decompress(bad, "x")).Message);
        var raw = Enumerable.Range(0, 70000).Select(i => (byte)i).ToArray();
        Assert.Equal(raw, Snappy.Decompress(TfBundleWriter.SnappyLiterals(raw), "x"));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ReadsEveryFixtureAsTheReferenceReaderDoes(string folder, string prefixName)
    {
        using var expected = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("tf", folder, "expected.json")));
        var root = expected.RootElement;
        string prefix = FixturePaths.Get("tf", folder, prefixName);
        var indexBytes = File.ReadAllBytes(prefix + ".index");
        Assert.Equal(root.GetProperty("index_size").GetInt32(), indexBytes.Length);

        // Table layout: footer handles, block compression byte, restart arrays.
        var table = root.GetProperty("table");
        int pos = indexBytes.Length - LevelDbTable.FooterLength;
        var meta = BlockHandle.Read(indexBytes, ref pos, "x");
        var index = BlockHandle.Read(indexBytes, ref pos, "x");
        Assert.Equal(Handle(table.GetProperty("metaindex_handle")), meta);
        Assert.Equal(Handle(table.GetProperty("index_handle")), index);
        foreach (var blockInfo in table.GetProperty("index_block").EnumerateArray())
        {
            var handle = new BlockHandle(blockInfo.GetProperty("offset").GetInt64(), blockInfo.GetProperty("size").GetInt64());
            Assert.Equal(blockInfo.GetProperty("compression").GetInt32(), indexBytes[handle.Offset + handle.Size]);
            var block = LevelDbTable.ReadBlock(indexBytes, handle, "x", "data block");
            Assert.Equal(blockInfo.GetProperty("uncompressed_size").GetInt32(), block.Length);
            int restarts = BinaryPrimitives.ReadInt32LittleEndian(block.AsSpan(block.Length - 4));
            var restartOffsets = Enumerable.Range(0, restarts).Select(i => BinaryPrimitives.ReadInt32LittleEndian(block.AsSpan(block.Length - 4 - 4 * restarts + 4 * i))).ToArray();
            Assert.Equal(blockInfo.GetProperty("restarts").EnumerateArray().Select(r => r.GetInt32()), restartOffsets);
            Assert.Equal(blockInfo.GetProperty("entries").GetInt32(), LevelDbTable.ReadBlockEntries(block, "x", "data block").Count);
        }

        using var reader = TensorBundleReader.Open(prefix);
        var header = root.GetProperty("header");
        Assert.Equal(header.GetProperty("num_shards").GetInt32(), reader.Header.NumShards);
        Assert.Equal(header.GetProperty("version").GetProperty("producer").GetInt32(), reader.Header.Producer);
        Assert.False(reader.Header.BigEndian);

        var tensors = root.GetProperty("tensors").EnumerateArray().ToList();
        Assert.Equal(tensors.Count, reader.Entries.Count);
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            var e = reader.Entries[i];
            Assert.Equal(t.GetProperty("name").GetString(), e.Name);
            Assert.Equal(t.GetProperty("dtype").GetInt32(), (int)e.DType);
            Assert.Equal(t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()), e.Shape);
            Assert.Equal(t.GetProperty("shard_id").GetInt32(), e.ShardId);
            Assert.Equal(t.GetProperty("offset").GetInt64(), e.Offset);
            Assert.Equal(t.GetProperty("size").GetInt64(), e.Size);
            Assert.Equal(Convert.ToUInt32(t.GetProperty("crc32c_masked").GetString(), 16), e.MaskedCrc32C);
            Assert.Equal(Convert.ToUInt32(t.GetProperty("crc32c").GetString(), 16), e.Crc32C);
            if (!t.TryGetProperty("crc_ok", out var ok)) continue; // gpt2-124M: index only
            Assert.True(ok.GetBoolean());
            if (e.DType == TfDataType.Float)
            {
                var values = new float[e.ElementCount];
                reader.ReadFloat32(e, values);
                Assert.Equal(t.GetProperty("first_values").EnumerateArray().Select(v => v.GetSingle()), values.Take(t.GetProperty("first_values").GetArrayLength()));
            }
            else
            {
                Assert.Equal(TfDataType.String, e.DType);
                var strings = reader.ReadStrings(e); // verifies the lengths crc and the entry crc
                Assert.Equal(t.GetProperty("string_lengths").EnumerateArray().Select(l => l.GetInt32()), strings.Select(s => s.Length));
                string firstHex = t.GetProperty("first_values")[0].GetString()!;
                Assert.StartsWith(firstHex, Convert.ToHexStringLower(strings[0]));
                var ex = Assert.Throws<NotSupportedException>(() => reader.ReadFloat32(e, new float[1]));
                Assert.Contains("unsupported dtype String", ex.Message);
            }
        }
    }

    [Fact]
    public void Gpt2IndexEndsExactlyAtTheOfficialDataSize()
    {
        using var reader = TensorBundleReader.Open(FixturePaths.Get("tf", "gpt2-124M", "model.ckpt"));
        Assert.Equal(148, reader.Entries.Count);
        long end = 0;
        foreach (var e in reader.Entries.OrderBy(e => e.Offset))
        {
            Assert.Equal(end, e.Offset); // back to back, no padding
            end += e.Size;
        }
        Assert.Equal(497_759_232L, end);
        Assert.Equal(reader.Prefix + ".data-00000-of-00001", reader.DataPath(0));
    }

    [Fact]
    public void CorruptIndexGivesOneLineErrorsNamingTheFile()
    {
        string dir = CopyFixture("half_plus_two_snappy");
        string prefix = Path.Combine(dir, "variables");
        var good = File.ReadAllBytes(prefix + ".index");

        var flipped = (byte[])good.Clone();
        flipped[10] ^= 0x40; // inside the data block
        AssertError<InvalidDataException>(prefix, flipped, "checksum mismatch in the data block");

        var badMagic = (byte[])good.Clone();
        badMagic[^1] ^= 0xff;
        AssertError<InvalidDataException>(prefix, badMagic, "bad table magic");

        AssertError<InvalidDataException>(prefix, good[..20], "truncated table");
        AssertError<InvalidDataException>(prefix, good[60..], "");

        var flippedIndex = (byte[])good.Clone();
        flippedIndex[good.Length - LevelDbTable.FooterLength - 8] ^= 1; // inside the index block
        AssertError<InvalidDataException>(prefix, flippedIndex, "");
    }

    [Fact]
    public void CorruptOrMissingDataGivesOneLineErrorsNamingTheFile()
    {
        string dir = CopyFixture("half_plus_two");
        string prefix = Path.Combine(dir, "variables");
        string data = prefix + ".data-00000-of-00001";
        var good = File.ReadAllBytes(data);

        var flipped = (byte[])good.Clone();
        flipped[5] ^= 0x01; // tensor 'b'
        File.WriteAllBytes(data, flipped);
        using (var reader = TensorBundleReader.Open(prefix))
        {
            var a = new float[1];
            reader.ReadFloat32(reader.GetEntry("a"), a); // untouched tensor still reads
            Assert.Equal(0.5f, a[0]);
            var ex = Assert.Throws<InvalidDataException>(() => reader.ReadFloat32(reader.GetEntry("b"), new float[1]));
            Assert.Contains(data, ex.Message);
            Assert.Contains("checksum mismatch in tensor 'b'", ex.Message);
        }

        File.WriteAllBytes(data, good[..9]);
        using (var reader = TensorBundleReader.Open(prefix))
        {
            var ex = Assert.Throws<InvalidDataException>(() => reader.ReadFloat32(reader.GetEntry("c"), new float[1]));
            Assert.Contains("truncated data shard", ex.Message);
            Assert.Contains(data, ex.Message);
        }

        File.Delete(data);
        using (var reader = TensorBundleReader.Open(prefix))
        {
            var ex = Assert.Throws<FileNotFoundException>(() => reader.ReadFloat32(reader.GetEntry("a"), new float[1]));
            Assert.Contains(data, ex.Message);
            Assert.Contains("missing", ex.Message);
        }
        Directory.Delete(dir, true);
    }

    [Fact]
    public void CorruptStringTensorIsDetected()
    {
        string dir = CopyFixture("half_plus_two_tf2");
        string prefix = Path.Combine(dir, "variables");
        string data = prefix + ".data-00000-of-00001";
        var bytes = File.ReadAllBytes(data);
        bytes[^1] ^= 0x10; // last byte of the object-graph string
        File.WriteAllBytes(data, bytes);
        using var reader = TensorBundleReader.Open(prefix);
        var ex = Assert.Throws<InvalidDataException>(() => reader.ReadStrings(reader.GetEntry("_CHECKPOINTABLE_OBJECT_GRAPH")));
        Assert.Contains("checksum mismatch in tensor '_CHECKPOINTABLE_OBJECT_GRAPH'", ex.Message);
        Directory.Delete(dir, true);
    }

    private static void AssertError<T>(string prefix, byte[] index, string message) where T : Exception
    {
        File.WriteAllBytes(prefix + ".index", index);
        var ex = Assert.ThrowsAny<T>(() => TensorBundleReader.Open(prefix).Dispose());
        Assert.Contains(prefix + ".index", ex.Message);
        Assert.Contains(message, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    private static BlockHandle Handle(JsonElement pair) => new(pair[0].GetInt64(), pair[1].GetInt64());

    internal static string CopyFixture(string folder)
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-tf-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        foreach (string f in Directory.GetFiles(FixturePaths.Get("tf", folder)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }
}
