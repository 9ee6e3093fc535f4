using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace GptSharp.Formats;

/// <summary>Element types found in checkpoint files (safetensors dtype strings, PyTorch storage types).</summary>
public enum TensorDType
{
    F32, F64, F16, BF16, I64, I32, I16, I8, U8, Bool, U16, U32, U64, F8E5M2, F8E4M3,
}

/// <summary>Sizes and names of <see cref="TensorDType"/> values, and conversion of stored bytes to float32.</summary>
internal static class TensorDTypes
{
    public static int ElementSize(this TensorDType dtype) => dtype switch
    {
        TensorDType.F64 or TensorDType.I64 or TensorDType.U64 => 8,
        TensorDType.F32 or TensorDType.I32 or TensorDType.U32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 or TensorDType.U16 => 2,
        _ => 1,
    };

    /// <summary>The safetensors spelling (<c>F32</c>, <c>BF16</c>, <c>BOOL</c>, ...).</summary>
    public static string SafeTensorsName(this TensorDType dtype) => dtype switch
    {
        TensorDType.Bool => "BOOL",
        TensorDType.F8E5M2 => "F8_E5M2",
        TensorDType.F8E4M3 => "F8_E4M3",
        _ => dtype.ToString(),
    };

    public static TensorDType? FromSafeTensorsName(string name) => name switch
    {
        "F32" => TensorDType.F32, "F64" => TensorDType.F64, "F16" => TensorDType.F16, "BF16" => TensorDType.BF16,
        "I64" => TensorDType.I64, "I32" => TensorDType.I32, "I16" => TensorDType.I16, "I8" => TensorDType.I8,
        "U8" => TensorDType.U8, "BOOL" => TensorDType.Bool, "U16" => TensorDType.U16, "U32" => TensorDType.U32,
        "U64" => TensorDType.U64, "F8_E5M2" => TensorDType.F8E5M2, "F8_E4M3" => TensorDType.F8E4M3,
        _ => null,
    };

    /// <summary>True for the types <see cref="ConvertToFloat"/> can read as float32.</summary>
    public static bool IsConvertibleToFloat(this TensorDType dtype) => dtype is TensorDType.F32 or TensorDType.F64
        or TensorDType.F16 or TensorDType.BF16 or TensorDType.I64 or TensorDType.I32 or TensorDType.I16
        or TensorDType.I8 or TensorDType.U8 or TensorDType.Bool;

    /// <summary>Converts little-endian elements of <paramref name="dtype"/> to float32 (as PyTorch's <c>.float()</c> rounds).</summary>
    public static void ConvertToFloat(TensorDType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        int n = destination.Length;
        switch (dtype)
        {
            case TensorDType.F32:
                MemoryMarshal.Cast<byte, float>(source[..(n * 4)]).CopyTo(destination);
                break;
            case TensorDType.F64:
                for (int i = 0; i < n; i++) destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(source[(8 * i)..]);
                break;
            case TensorDType.F16:
                for (int i = 0; i < n; i++) destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(source[(2 * i)..]);
                break;
            case TensorDType.BF16:
                // bfloat16 is the high half of a float32: widening is exact.
                for (int i = 0; i < n; i++)
                    destination[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]) << 16);
                break;
            case TensorDType.I64:
                for (int i = 0; i < n; i++) destination[i] = BinaryPrimitives.ReadInt64LittleEndian(source[(8 * i)..]);
                break;
            case TensorDType.I32:
                for (int i = 0; i < n; i++) destination[i] = BinaryPrimitives.ReadInt32LittleEndian(source[(4 * i)..]);
                break;
            case TensorDType.I16:
                for (int i = 0; i < n; i++) destination[i] = BinaryPrimitives.ReadInt16LittleEndian(source[(2 * i)..]);
                break;
            case TensorDType.I8:
                for (int i = 0; i < n; i++) destination[i] = (sbyte)source[i];
                break;
            case TensorDType.U8:
            case TensorDType.Bool:
                for (int i = 0; i < n; i++) destination[i] = source[i];
                break;
            default:
                throw new NotSupportedException($"Reading {dtype.SafeTensorsName()} tensors as float32 is not supported.");
        }
    }
}

/// <summary>Name, element type and shape of one tensor stored in a file.</summary>
public sealed record StoredTensor(string Name, TensorDType DType, int[] Shape)
{
    /// <summary>The file's own name of a type <see cref="TensorDType"/> has no member for (GGUF's <c>q8_0</c>, <c>q4_K</c>); null otherwise.</summary>
    public string? StorageType { get; init; }

    /// <summary>The type as the file names it: <see cref="StorageType"/>, else the safetensors spelling of <see cref="DType"/>.</summary>
    public string TypeName => StorageType ?? DType.SafeTensorsName();

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (int d in Shape) n *= d;
            return n;
        }
    }

    public string ShapeString => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A file of named tensors that can be read one at a time straight into a destination buffer:
/// what the model loaders consume, whatever the format (safetensors, PyTorch .pth, ...).
/// </summary>
internal interface ITensorSource : IDisposable
{
    /// <summary>The file, for error messages.</summary>
    string FilePath { get; }

    /// <summary>Every tensor in the file, in file order.</summary>
    IReadOnlyList<StoredTensor> Tensors { get; }

    /// <summary>The tensor called <paramref name="name"/>, or null.</summary>
    StoredTensor? Find(string name);

    /// <summary>
    /// Reads tensor <paramref name="name"/> as float32 into <paramref name="destination"/>, which must hold
    /// exactly its element count. Float32 data goes straight from the file into the destination.
    /// </summary>
    void ReadInto(string name, Span<float> destination);
}
