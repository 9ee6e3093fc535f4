using GptSharp.Checkpoints;
using GptSharp.Model;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Tests.Checkpoints.TensorFlow;
using GptSharp.Formats.TensorFlow;

namespace GptSharp.Tests.Hostile;

/// <summary>
/// Every input that once broke us (Fixtures/hostile, see its README) replayed through the loaders that broke:
/// each must now fail with our format error, in bounded time and memory.
/// </summary>
public sealed class HostileFixtureTests
{
    public static TheoryData<string> Files() => new(Directory.GetFiles(FixturePaths.Get("hostile")).Select(Path.GetFileName).Where(f => f != "README.md")!);

    [Theory]
    [MemberData(nameof(Files))]
    public void FailsCleanly(string name)
    {
        string path = FixturePaths.Get("hostile", name);
        string dir = Directory.CreateTempSubdirectory("gptsharp-hostile-fixture-").FullName;
        try
        {
            Action load = Path.GetExtension(name) switch
            {
                ".pth" or ".safetensors" => () =>
                {
                    try { ModelFileInfo.Read(path); }
                    catch (InvalidDataException) { }
                    GptModel.Load(path).Dispose();
                },
                ".snappy" => () => Snappy.Decompress(File.ReadAllBytes(path), path),
                ".index" => () =>
                {
                    using var bundle = TensorBundleReader.Parse(Path.Combine(dir, "model.ckpt"), File.ReadAllBytes(path));
                    bundle.CheckDataFiles();
                },
                ".json" when name.StartsWith("hparams") => () =>
                {
                    File.Copy(path, Path.Combine(dir, "hparams.json"));
                    TfBundleWriter.Write(Path.Combine(dir, "model.ckpt"), new Dictionary<string, (long[], float[])> { ["model/wte"] = ([50, 16], new float[800]) });
                    GptModel.Load(dir).Dispose();
                },
                ".json" => () => GptConfig.FromFile(path),
                _ => throw new InvalidOperationException($"no loader for {name}"),
            };
            var e = Bounded.Rejects<Exception>(load, maxAllocatedBytes: 64L << 20, seconds: 20);
            Assert.True(e is InvalidDataException or FileNotFoundException, $"{name}: {e}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
